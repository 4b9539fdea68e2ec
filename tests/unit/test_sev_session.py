"""LAUNCH_START sessions: virtee's known answers, the platform's view, the files written.

Vectors (tests/data/README.md, "LAUNCH_START vectors"): virtee/sev
``src/session/key.rs`` tests ``derive`` and ``mac``, and ``src/session/mod.rs`` test
``initialized::session`` (commit 9cf2adbffa209cc5becf7ff89ffdf624e7278ced): the KDF of
a zero key, and a session built from an all-zero shared secret (16 bytes), nonce, IV,
TEK, TIK and policy.
"""

from __future__ import annotations

import base64
import hmac
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.errors import ConfigError, InputError, VerificationError
from harness.sev.certs import SevCertificate
from harness.sev.chain import Roots
from harness.sev.packet import TransportKeys
from harness.sev.session import (
    SessionBuffer,
    kdf,
    open_session,
    session_buffer,
    start_session,
    write_session,
)
from tests.conftest import DATA
from tests.unit.sev_chain_maker import made_chain

NAPLES = DATA / "sev-naples"
ZERO_KEYS = TransportKeys(tek=bytes(16), tik=bytes(16))
# virtee/sev src/session/key.rs `derive`: KDF(0^16, "sev-master-secret", 0^16).
MASTER_OF_ZEROS = bytes.fromhex("ab4d269fcc62bedb4511d56c386ce706")
# virtee/sev src/session/mod.rs `initialized::session`.
WRAP_TK = bytes.fromhex("2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4")
WRAP_MAC = bytes.fromhex(
    "3176c0752738bd9d5e8668953402 0f528c088f16238826b000b327dee6aeed7d".replace(" ", "")
)
# ... and key.rs `mac`: HMAC-SHA256(0^16, 0^4), the POLICY_MAC of policy 0 under a zero TIK.
POLICY_MAC = bytes.fromhex("aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af")
#: The order of P-384's base point (FIPS 186-4, D.1.2.4).
P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)


def test_kdf_known_answer() -> None:
    assert kdf(bytes(16), b"sev-master-secret", bytes(16)) == MASTER_OF_ZEROS


def test_kdf_longer_output_counts_blocks() -> None:
    """A 48-byte output is K(1) || K(2) truncated, each block with L = 384 bits."""
    long = kdf(b"k", b"label", b"ctx", 48)
    assert len(long) == 48
    assert long[:16] != kdf(b"k", b"label", b"ctx")  # L is part of every block


def test_session_known_answer() -> None:
    buffer = session_buffer(bytes(16), ZERO_KEYS, 0, bytes(16), bytes(16))
    assert buffer == SessionBuffer(bytes(16), WRAP_TK, bytes(16), WRAP_MAC, POLICY_MAC)
    raw = buffer.serialize()
    assert raw == bytes(16) + WRAP_TK + bytes(16) + WRAP_MAC + POLICY_MAC
    assert SessionBuffer.parse(raw) == buffer
    with pytest.raises(InputError, match="128 bytes; this one is 127"):
        SessionBuffer.parse(raw[:-1])


def _as_the_platform(
    pdh_private: ec.EllipticCurvePrivateKey, godh_cert: bytes, blob: bytes
) -> bytes:
    """What the secure element does with LAUNCH_START: returns TEK || TIK."""
    godh = SevCertificate.parse(godh_cert, "godh").public_key()
    z = pdh_private.exchange(ec.ECDH(), godh)
    buffer = SessionBuffer.parse(blob)
    master = kdf(z, b"sev-master-secret", buffer.nonce)
    kek, kik = kdf(master, b"sev-kek"), kdf(master, b"sev-kik")
    assert hmac.compare_digest(hmac.digest(kik, buffer.wrap_tk, "sha256"), buffer.wrap_mac)
    decrypt = Cipher(algorithms.AES(kek), modes.CTR(buffer.wrap_iv)).decryptor()
    return decrypt.update(buffer.wrap_tk) + decrypt.finalize()


def test_the_platform_unwraps_the_keys_and_checks_the_policy() -> None:
    made = made_chain()
    pdh = SevCertificate.parse(made.files["pdh"], "pdh")
    session = start_session(pdh, 0x5)
    tk = _as_the_platform(made.pdh_private, session.godh_cert, session.blob)
    assert tk == session.keys.tek + session.keys.tik
    policy_mac = SessionBuffer.parse(session.blob).policy_mac
    assert policy_mac == hmac.digest(session.keys.tik, (5).to_bytes(4, "little"), "sha256")
    other = start_session(pdh, 0x5)
    assert other.blob[:16] != session.blob[:16] and other.godh_cert != session.godh_cert


def test_the_shared_secret_is_the_x_coordinate_big_endian() -> None:
    """Z = x(d_godh * Q_pdh), checked as the public key of the product of the scalars."""
    made = made_chain()
    godh = ec.derive_private_key(12345, ec.SECP384R1())
    pdh = SevCertificate.parse(made.files["pdh"], "pdh")
    keys = TransportKeys(tek=bytes(range(16)), tik=bytes(range(16, 32)))
    session = start_session(pdh, 1, nonce=bytes(16), iv=bytes(16), keys=keys, godh_private=godh)
    d = made.pdh_private.private_numbers().private_value
    x = (
        ec.derive_private_key(12345 * d % P384_ORDER, ec.SECP384R1())
        .public_key()
        .public_numbers()
        .x
    )
    expected = session_buffer(x.to_bytes(48, "big"), keys, 1, bytes(16), bytes(16))
    assert session.blob == expected.serialize()
    assert SevCertificate.parse(session.godh_cert, "godh").public_key().public_numbers() == (
        godh.public_key().public_numbers()
    )


def test_a_pdh_must_be_an_ecdh_key() -> None:
    pek = SevCertificate.parse((NAPLES / "pek.cert").read_bytes(), "pek")
    with pytest.raises(InputError, match=r"usage 0x1002 and algorithm 0x2; a PDH is usage 0x1003"):
        start_session(pek, 0)
    pdh = SevCertificate.parse((NAPLES / "pdh.cert").read_bytes(), "pdh")
    with pytest.raises(InputError, match="32 bits"):
        start_session(pdh, 1 << 32)
    with pytest.raises(InputError, match="16 bytes"):
        start_session(pdh, 0, nonce=b"short")


def test_session_repr_hides_the_keys() -> None:
    pdh = SevCertificate.parse((NAPLES / "pdh.cert").read_bytes(), "pdh")
    session = start_session(pdh, 0x1)
    assert repr(session) == "Session(policy=0x1, keys=<redacted>)"
    assert session.keys.tek.hex() not in repr(session)


def test_written_files(tmp_path: Path) -> None:
    godh = ec.generate_private_key(ec.SECP384R1())
    pdh = SevCertificate.parse((NAPLES / "pdh.cert").read_bytes(), "pdh")
    session = start_session(pdh, 0x1, godh_private=godh)
    written = write_session(session, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["godh.b64", "godh.cert", "session.b64", "session.bin", "tmp_tk.bin"]
    out = tmp_path / "out"
    assert (out / "godh.cert").read_bytes() == session.godh_cert
    assert base64.b64decode((out / "godh.b64").read_bytes()) == session.godh_cert
    assert base64.b64decode((out / "session.b64").read_bytes()) == session.blob
    assert (out / "session.bin").read_bytes() == session.blob
    assert TransportKeys.from_tiktek((out / "tmp_tk.bin").read_bytes()) == session.keys
    scalar = godh.private_numbers().private_value
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = path.read_bytes()
        for encoding in ("big", "little"):
            assert scalar.to_bytes(48, encoding) not in data  # the GODH key is never written


def test_open_session_with_the_naples_chain(tmp_path: Path) -> None:
    opened = open_session(str(NAPLES), None, False, "auto", "0x1", str(tmp_path), allow_naples=True)
    lines = opened.lines()
    assert lines[0] == "chain verified (naples):"
    assert "  PDH signed by PEK: ok" in lines
    assert "policy 0x1" in lines
    assert lines[-1] == f"wrote {tmp_path / 'tmp_tk.bin'}"


def test_open_session_with_a_trusted_lone_pdh(tmp_path: Path) -> None:
    opened = open_session(None, str(NAPLES / "pdh.cert"), True, "auto", "3", str(tmp_path))
    assert opened.chain is None
    assert opened.lines()[0].startswith("PDH trusted without a chain (--trust-pdh)")
    assert (tmp_path / "session.bin").stat().st_size == 128


def test_open_session_with_a_self_made_chain(tmp_path: Path) -> None:
    files = made_chain().files
    for name, raw in files.items():
        (tmp_path / f"{name}.cert").write_bytes(raw)
    own = Roots.of("simulated", files["ark"], files["ask"])
    opened = open_session(str(tmp_path), None, False, "auto", "1", str(tmp_path / "s"), own)
    assert opened.chain is not None and opened.chain.generation == "simulated"
    with pytest.raises(VerificationError, match="none of the trusted ARKs"):
        open_session(str(tmp_path), None, False, "auto", "1", str(tmp_path / "t"))
    assert not (tmp_path / "t").exists()  # a refused chain writes nothing


@pytest.mark.parametrize(
    ("certs", "pdh", "trust", "policy", "message"),
    [
        (None, None, False, "1", r"^Give the platform's chain \(--certs DIR\) or a lone PDH"),
        (str(NAPLES), str(NAPLES / "pdh.cert"), True, "1", r"^Give the platform's chain"),
        (None, str(NAPLES / "pdh.cert"), False, "1", r"^A lone PDH \(--pdh\) proves nothing"),
        (str(NAPLES), None, True, "1", r"^--trust-pdh trusts a lone PDH"),
        (str(NAPLES), None, False, "one", r"^The policy 'one' is not a number"),
        (str(NAPLES), None, False, "0x40", r"^The policy 0x40 sets reserved bit 6"),
    ],
)
def test_open_session_refuses(
    tmp_path: Path, certs: str | None, pdh: str | None, trust: bool, policy: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        open_session(certs, pdh, trust, "auto", policy, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_open_session_refuses_a_lone_pek(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^The PDH certificate .*pek.cert has key usage 0x1002"):
        open_session(None, str(NAPLES / "pek.cert"), True, "auto", "1", str(tmp_path))
