"""The owner's chain check: a real Naples chain verifies, and every broken link is named.

The chain is one Naples machine's (virtee's sev crate test data), checked against the
AMD roots the harness ships; a self-made chain (tests/unit/sev_chain_maker.py) checks
trusting another root set explicitly.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import ConfigError, InputError, VerificationError
from harness.sev.certs import CA_HEADER, SIG_SLOT, SIGNED_SIZE, AmdCertificate, SevCertificate
from harness.sev.chain import PlatformChain, Roots, verify_chain
from tests.conftest import DATA
from tests.unit.sev_chain_maker import made_chain

NAPLES = DATA / "sev-naples"
AMD = Roots.amd()
NAPLES_ROOTS = AMD.get("naples")
LINKS = [
    "ARK (naples) self-signed: ok",
    "ASK (naples) signed by ARK: ok",
    "CEK signed by Naples ASK: ok",
    "OCA self-signed: ok",
    "PEK signed by OCA: ok",
    "PEK signed by CEK: ok",
    "PDH signed by PEK: ok",
]


def naples_files() -> dict[str, bytes]:
    """All six certificates of the Naples chain, the ASK and ARK from the shipped roots."""
    files = {n: (NAPLES / f"{n}.cert").read_bytes() for n in ("pdh", "pek", "oca", "cek")}
    files["ask"] = NAPLES_ROOTS.ask.serialize()
    files["ark"] = NAPLES_ROOTS.ark.serialize()
    return files


def chain_of(files: dict[str, bytes]) -> PlatformChain:
    pdh, pek, oca, cek = (SevCertificate.parse(files[n], n) for n in ("pdh", "pek", "oca", "cek"))
    ask, ark = (AmdCertificate.parse(files[n], n) if n in files else None for n in ("ask", "ark"))
    return PlatformChain(pdh, pek, oca, cek, ask, ark)


@pytest.mark.parametrize("generation", ["naples", "auto"])
def test_the_naples_chain_verifies(generation: str) -> None:
    verified = verify_chain(PlatformChain.load(NAPLES), AMD, generation, allow_naples=True)
    assert verified.generation == "naples"
    assert [str(link) for link in verified.links] == LINKS
    assert verified.pdh.serialize() == (NAPLES / "pdh.cert").read_bytes()


@pytest.mark.parametrize("generation", ["naples", "auto"])
def test_the_chain_with_its_ask_and_ark_on_disk_verifies(tmp_path: Path, generation: str) -> None:
    for name, raw in naples_files().items():
        (tmp_path / f"{name}.cert").write_bytes(raw)
    chain = PlatformChain.load(tmp_path)
    assert chain.ark is not None and chain.ask is not None
    assert verify_chain(chain, AMD, generation, allow_naples=True).generation == "naples"


def test_auto_with_only_the_ask_follows_its_certifying_key() -> None:
    files = naples_files()
    del files["ark"]
    assert verify_chain(chain_of(files), AMD, allow_naples=True).generation == "naples"


@pytest.mark.parametrize("generation", ["naples", "auto"])
def test_a_naples_chain_is_refused_unless_allowed(generation: str) -> None:
    """It verifies, but Naples chip keys can be extracted: it proves nothing."""
    with pytest.raises(VerificationError) as err:
        verify_chain(PlatformChain.load(NAPLES), AMD, generation)
    assert "Naples root" in err.value.message and "proves nothing" in err.value.message
    assert err.value.hint is not None and "--allow-naples" in err.value.hint


def test_a_pinned_cek_must_be_the_chains() -> None:
    chain = PlatformChain.load(NAPLES)
    assert verify_chain(chain, AMD, allow_naples=True, cek=chain.cek).generation == "naples"
    other = bytearray(chain.cek.serialize())
    other[0x10 + 8] ^= 0x01  # another chip's public key
    with pytest.raises(VerificationError, match="not the chip pinned with --cek"):
        verify_chain(chain, AMD, allow_naples=True, cek=SevCertificate.parse(bytes(other), "x"))


@pytest.mark.parametrize("generation", ["rome", "milan", "genoa"])
def test_another_generation_is_refused_by_name(generation: str) -> None:
    title = generation.capitalize()
    with pytest.raises(VerificationError, match=rf"^The CEK is not signed by the {title} ASK"):
        verify_chain(PlatformChain.load(NAPLES), AMD, generation)
    with pytest.raises(
        VerificationError, match=rf"^The chain's ARK is not the trusted {title} ARK"
    ):
        verify_chain(chain_of(naples_files()), AMD, generation)


def test_an_unknown_generation_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"no trusted root set 'turin'; the known ones are naples"
    ):
        verify_chain(PlatformChain.load(NAPLES), AMD, "turin")


def test_an_untrusted_root_is_refused() -> None:
    """Trusting only Rome's roots, the Naples chain finds no ARK, ASK or CEK signer."""
    rome = AMD.get("rome")
    only_rome = Roots.of("rome", rome.ark.serialize(), rome.ask.serialize())
    with pytest.raises(
        VerificationError, match=r"^The CEK is signed by none of the trusted ASKs \(Rome\)"
    ):
        verify_chain(PlatformChain.load(NAPLES), only_rome)
    with pytest.raises(
        VerificationError, match=r"^The chain's ARK is none of the trusted ARKs \(Rome\)"
    ):
        verify_chain(chain_of(naples_files()), only_rome)
    files = naples_files()
    del files["ark"]
    with pytest.raises(VerificationError, match=r"^The ASK is not signed by a trusted ARK"):
        verify_chain(chain_of(files), only_rome)


def test_a_self_made_chain_verifies_only_when_its_roots_are_trusted() -> None:
    files = made_chain().files
    own = Roots.of("simulated", files["ark"], files["ask"])
    platform = {n: files[n] for n in ("pdh", "pek", "oca", "cek")}
    for chain in (chain_of(files), chain_of(platform)):
        assert verify_chain(chain, own).generation == "simulated"
        assert verify_chain(chain, own, "simulated").links[2].issuer == "Simulated ASK"
    with pytest.raises(VerificationError, match=r"^The CEK is signed by none of the trusted ASKs"):
        verify_chain(chain_of(platform), AMD)
    with pytest.raises(VerificationError, match=r"^The chain's ARK is none of the trusted ARKs"):
        verify_chain(chain_of(files), AMD)


def test_a_missing_or_malformed_file_is_named(tmp_path: Path) -> None:
    shutil.copytree(NAPLES, tmp_path / "chain")
    (tmp_path / "chain" / "oca.cert").unlink()
    with pytest.raises(InputError, match=r"OCA certificate file .*oca.cert does not exist"):
        PlatformChain.load(tmp_path / "chain")
    (tmp_path / "chain" / "oca.cert").write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match=r"oca.cert is 100 bytes; an SEV certificate is 2084"):
        PlatformChain.load(tmp_path / "chain")
    (tmp_path / "chain" / "oca.cert").write_bytes((NAPLES / "oca.cert").read_bytes())
    (tmp_path / "chain" / "ark.cert").write_bytes(b"\1\0\0\0")
    with pytest.raises(InputError, match=r"ark.cert is 4 bytes, too short"):
        PlatformChain.load(tmp_path / "chain")
    with pytest.raises(InputError, match=r"directory .*nowhere does not exist"):
        PlatformChain.load(tmp_path / "nowhere")


# Which error a one-byte change in each field must raise: the certificate (and for a
# signature, its signer) named at the start of the sentence.
def _signed_by(subject: str, issuer: str) -> str:
    if subject == issuer:
        return rf"^The {subject}('s self-signature does not verify| is not self-signed)"
    return rf"^The {subject}('s signature by| is not signed by) the {issuer}\b"


SIGNERS = {"cek": "Naples ASK", "oca": "OCA", "pek": "OCA", "pdh": "PEK"}
SAMPLE_STEP = 7


def _sample(start: int, length: int) -> list[int]:
    """Every SAMPLE_STEP-th byte of a field, and its first and last."""
    return sorted({*range(start, start + length, SAMPLE_STEP), start + length - 1})


def _cases() -> Iterator[tuple[str, str, list[int], str]]:
    files = naples_files()
    for name, issuer in SIGNERS.items():
        cert = SevCertificate.parse(files[name], name)
        # A changed usage or algorithm may name another valid one (0x3 -> 0x103): then
        # the certificate's own signature breaks instead.
        role = rf"^The {name.upper()} certificate has key |{_signed_by(name.upper(), issuer)}"
        yield name, "usage", list(range(0x08, 0x0C)), role
        yield name, "algo", list(range(0x0C, 0x10)), role
        # The key's curve, QX and QY; the zero padding after them is signed like them.
        yield name, "pubkey", _sample(0x10, 4 + 72 + 72), _signed_by(name.upper(), issuer)
        for i, slot in enumerate(cert.sigs):
            if slot.usage == 0x1000:  # an empty slot: nothing there is checked
                continue
            base = SIGNED_SIZE + i * SIG_SLOT.size
            signer = {0x13: "Naples ASK", 0x1001: "OCA", 0x1002: "PEK", 0x1004: "CEK"}[slot.usage]
            expect = _signed_by(name.upper(), signer)
            yield name, f"sig{i + 1} usage", list(range(base, base + 4)), expect
            yield name, f"sig{i + 1} algo", list(range(base + 4, base + 8)), expect
            # ECDSA: R and S (the rest of the slot is reserved); RSA: the whole integer.
            length = 512 if slot.algo in (0x1, 0x101) else 2 * 72
            yield name, f"sig{i + 1}", _sample(base + 8, length), expect
    ask = r"^The ASK('s signature by| is not signed by) the Naples ARK\b"
    ark = r"^The chain's ARK is not the trusted Naples ARK\.$"
    size = 2048 // 8
    for name, expect in (("ask", ask), ("ark", ark)):
        usage = ark if name == "ark" else r"^The ASK certificate has key usage"
        yield name, "key ids", _sample(4, 32), expect
        yield name, "usage", list(range(36, 40)), usage
        yield name, "pubexp", _sample(CA_HEADER.size, size), expect
        yield name, "modulus", _sample(CA_HEADER.size + size, size), expect
        yield name, "signature", _sample(CA_HEADER.size + 2 * size, size), expect


@pytest.mark.parametrize(
    ("name", "field", "offsets", "expect"),
    list(_cases()),
    ids=[f"{c[0]}-{c[1]}" for c in _cases()],
)
def test_a_one_byte_change_breaks_the_named_link(
    name: str, field: str, offsets: list[int], expect: str
) -> None:
    """Each of the six certificates' usage and algorithm fields in full; of its key and
    signatures, every 7th byte and the last (enough to hit every 32-bit word's
    neighbourhood while the whole run stays near a second). Both the low bit and the
    high bit of each byte are changed, in turn."""
    for offset in offsets:
        for bit in (0x01, 0x80):
            files = naples_files()
            raw = bytearray(files[name])
            raw[offset] ^= bit
            files[name] = bytes(raw)
            with pytest.raises(VerificationError) as err:
                verify_chain(chain_of(files), AMD, "naples")
            assert re.search(expect, err.value.message), (
                f"{name} {field} byte {offset:#x} ^ {bit:#x}: {err.value.message}"
            )
