"""The root's proof of itself (harness.guest.proof, images/minimal/proof).

The guest's side runs for real here: the program under this machine's /bin/sh (dash,
with coreutils: what a Debian root runs it with), checked against Python's ``hmac``,
which the program does not use. The judge is played against scripted guests that print
what a host's kernel could: the token, a MAC from an earlier boot, a made-up one.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from pathlib import Path

import pytest

from harness.config import RECIPES
from harness.errors import ConfigError, GuestVerdict
from harness.guest import imagemeta, proof, rootfs
from tests.fakeguest import OWNER_PROOF, play_scenario, proof_line

pytestmark = pytest.mark.unit

KEY = bytes(range(100, 132))
NONCE = "0f" * 32


def answer(tmp_path: Path, *, secret: str | None = None, fw_cfg: str | None = None,
           key: bytes = KEY) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the root's program with the nonce where the scenario puts it."""
    (tmp_path / "key").write_bytes(proof.padded_blocks(key))
    paths = []
    for name, value in (("secret", secret), ("fw_cfg", fw_cfg)):
        path = tmp_path / name
        if value is not None:
            path.write_text(value)
        paths.append(str(path))
    program = tmp_path / "proof"
    program.write_bytes(proof.program((RECIPES / "minimal" / "proof").read_text()))
    return subprocess.run(
        ["sh", str(program), str(tmp_path / "key"), *paths],
        capture_output=True,
        text=True,
        check=False,
    )


def reference(key: bytes, source: str, nonce: str) -> str:
    """RFC 2104 by Python's hmac, over the message the protocol names."""
    message = f"harness-proof/1 {source} {nonce}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def test_the_program_answers_fw_cfgs_nonce_with_the_hmac(tmp_path: Path) -> None:
    done = answer(tmp_path, fw_cfg=NONCE)
    assert done.returncode == 0
    assert done.stdout == f"HARNESS-PROOF from=fw_cfg mac={reference(KEY, 'fw_cfg', NONCE)}\n"


def test_the_tables_nonce_comes_first(tmp_path: Path) -> None:
    other = "a1" * 32
    done = answer(tmp_path, secret=NONCE, fw_cfg=other)
    assert done.stdout == f"HARNESS-PROOF from=secret mac={reference(KEY, 'secret', NONCE)}\n"


def test_the_judge_takes_the_programs_answer(tmp_path: Path) -> None:
    done = answer(tmp_path, fw_cfg=NONCE)
    note = proof.Proof(NONCE, KEY, proof.FW_CFG).judge(done.stdout, "")
    assert "proved itself" in note
    with pytest.raises(GuestVerdict):
        proof.Proof(NONCE, bytes(32), proof.FW_CFG).judge(done.stdout, "")
    with pytest.raises(GuestVerdict):  # the same answer, but this launch gave it by the table
        proof.Proof(NONCE, KEY, proof.SECRET).judge(done.stdout, "")


@pytest.mark.parametrize(
    ("nonce", "why"),
    [
        ("0F" * 32, "not lowercase hex"),
        ("owner's message of the host's choosing", "not lowercase hex"),
        ("0f" * 31, "not 64 hex digits"),
        ("0f" * 33, "not 64 hex digits"),
        ("", "not 64 hex digits"),
    ],
)
def test_the_program_is_no_mac_oracle(tmp_path: Path, nonce: str, why: str) -> None:
    done = answer(tmp_path, fw_cfg=nonce)
    assert done.returncode == 1
    assert done.stdout.startswith("HARNESS-PROOF refused:") and why in done.stdout
    assert "mac=" not in done.stdout


def test_no_nonce_is_refused_in_one_line(tmp_path: Path) -> None:
    done = answer(tmp_path)
    assert done.returncode == 1
    assert done.stdout == (
        "HARNESS-PROOF refused: no nonce, neither in the secret table nor in fw_cfg\n"
    )


def test_the_padded_blocks_are_rfc_2104s() -> None:
    pads = proof.padded_blocks(KEY)
    inner = hashlib.sha256(pads[:64] + proof.message("secret", NONCE)).digest()
    assert hashlib.sha256(pads[64:] + inner).hexdigest() == reference(KEY, "secret", NONCE)
    with pytest.raises(ValueError):
        proof.padded_blocks(bytes(65))


def test_the_program_names_the_nonces_places() -> None:
    text = proof.program((RECIPES / "minimal" / "proof").read_text()).decode()
    assert "@" not in text
    assert f"/sys/kernel/security/secrets/coco/{proof.NONCE_GUID}" in text
    assert f"/sys/firmware/qemu_fw_cfg/by_name/{proof.FW_CFG_NAME}/raw" in text


def test_the_key_is_private_on_the_root() -> None:
    files = rootfs.proof_files(imagemeta.Recipe.load("minimal"), proof.padded_blocks(KEY))
    assert files[proof.ROOT_KEY][0] & 0o777 == 0o600


def test_an_image_without_a_key_is_refused_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no proof\.key"):
        proof.read_key(tmp_path)


# -- the judge ----------------------------------------------------------------------------


def judged(text: str, p: proof.Proof = OWNER_PROOF) -> str:
    try:
        return p.judge(text, "")
    except GuestVerdict as verdict:
        return verdict.matched


def test_the_owners_answer_passes() -> None:
    assert "proved itself" in judged(proof_line())


def test_the_token_alone_proves_nothing() -> None:
    assert judged("HARNESS-BOOTED token=abc\n") == "no proof"


def test_an_earlier_boots_answer_fails() -> None:
    earlier = proof.Proof("77" * 32, OWNER_PROOF.key)
    assert judged(proof_line(earlier)) == "proof"


def test_a_made_up_mac_fails() -> None:
    assert judged(proof_line(mac="0" * 64)) == "proof"


def test_two_answers_fail() -> None:
    assert judged(proof_line() + proof_line()) == "proof"


def test_an_answer_by_another_way_fails_even_relabelled() -> None:
    """The host relays what a root answered to fw_cfg's nonce (it saw that nonce) as if
    the root had read this launch's table: the label is covered by the MAC."""
    bound = proof.Proof(OWNER_PROOF.nonce, OWNER_PROOF.key, proof.SECRET)
    relayed = OWNER_PROOF.expected()  # the fw_cfg answer to the same nonce
    assert judged(proof_line(bound, source="fw_cfg", mac=relayed), bound) == "proof"
    assert judged(proof_line(bound, source="secret", mac=relayed), bound) == "proof"
    assert "by secret" in judged(proof_line(bound), bound)


def test_a_refusal_is_quoted() -> None:
    with pytest.raises(GuestVerdict, match="not 64 hex digits"):
        OWNER_PROOF.judge("HARNESS-PROOF refused: the nonce from fw_cfg is not 64 hex digits\n", "")


# -- the verdict: a host's kernel that prints the owner's token ---------------------------


TRANSFER = "Transferring to (crypto0)/boot/grub/grub.cfg\n"


def play(tmp_path: Path, name: str, text: str) -> str | None:
    return play_scenario(tmp_path, name, text, token="abc")[0]


@pytest.mark.parametrize("name", ["passwordless", "foreign-disk"])
def test_a_marker_without_the_proof_fails(tmp_path: Path, name: str) -> None:
    with pytest.raises(GuestVerdict) as err:
        play(tmp_path, name, TRANSFER + "HARNESS-BOOTED token=abc\n")
    assert err.value.matched == "no proof"


def test_the_marker_with_the_proof_passes_and_says_so(tmp_path: Path) -> None:
    said = play(tmp_path, "passwordless", TRANSFER + proof_line() + "HARNESS-BOOTED token=abc\n")
    assert said is not None and "proved itself" in said


def test_a_stopped_guest_that_printed_the_token_must_prove_it(tmp_path: Path) -> None:
    text = "error: no such device: 1234-abcd.\n" + TRANSFER + "HARNESS-BOOTED token=abc\n"
    with pytest.raises(GuestVerdict) as err:
        play(tmp_path, "search-hijack", text)
    assert err.value.matched == "no proof"
