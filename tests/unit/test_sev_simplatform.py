"""The simulated platform: its certificate chain and LAUNCH_START.

The chain is checked with plain ``cryptography`` calls written here from the formats
(AMD SEV API appendix C; sev-tool ``sevapi.h``), not with the module's code; those
checks are first shown to accept AMD's real Naples chain (tests/data/sev-naples, from
virtee/sev). Sessions are built here by hand from the spec's formulas. The KDF and
session known answers are virtee/sev's ``src/session/key.rs`` and ``src/session/mod.rs``
unit tests (commit 9cf2adb).
"""

from __future__ import annotations

import hmac
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.errors import ConfigError, SecretFormatError, VerificationError
from harness.sev import simplatform
from harness.sev.measure import LaunchMeasure, PlatformInfo, launch_digest, verify_measurement
from harness.sev.packet import TransportKeys, build_packet
from harness.sev.secret import SecretTable, disk_passphrase_entry
from harness.sev.simplatform import SessionBuffer, SimulatedPlatform, shared_platform
from harness.sev.simulated import SimulatedSecureElement

NAPLES = Path(__file__).resolve().parents[1] / "data" / "sev-naples"
#: AMD's Naples ARK and ASK, kept apart so that the chain directory is as a platform
#: exports it (without them).
NAPLES_CA = NAPLES.parent / "amd-naples-ca"
NAMES = ("ark", "ask", "cek", "oca", "pek", "pdh")
POLICY = 0x1  # NODBG

# virtee/sev src/session/key.rs `derive`: KDF(16 zero bytes, "sev-master-secret", 16 zero bytes).
KAT_MASTER = bytes.fromhex("ab4d269fcc62bedb4511d56c386ce706")
# virtee/sev src/session/mod.rs `session`: Z, nonce, IV, TEK, TIK all zero; policy 0.
KAT_WRAP_TK = bytes.fromhex("2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4")
KAT_WRAP_MAC = bytes.fromhex("3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d")
KAT_POLICY_MAC = bytes.fromhex("aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af")


# --- the test's own reading of the formats -------------------------------------------


def le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def ca_parts(cert: bytes) -> tuple[rsa.RSAPublicKey, int]:
    """An AMD CA certificate's RSA key and where its signature starts."""
    exp_bits, mod_bits = struct.unpack_from("<II", cert, 0x38)
    exp_end = 0x40 + exp_bits // 8
    modulus = cert[exp_end : exp_end + mod_bits // 8]
    key = rsa.RSAPublicNumbers(le(cert[0x40:exp_end]), le(modulus)).public_key()
    return key, exp_end + mod_bits // 8


def pss_verify(key: rsa.RSAPublicKey, signature_le: bytes, message: bytes) -> None:
    digest: hashes.HashAlgorithm = hashes.SHA256() if key.key_size == 2048 else hashes.SHA384()
    pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    key.verify(signature_le[: key.key_size // 8][::-1], message, pss, digest)


def ca_verify(signer: bytes, cert: bytes) -> None:
    """*signer* (ARK) signed *cert* (ASK or itself), and *cert* names it as its signer."""
    key, _ = ca_parts(signer)
    _, sig_at = ca_parts(cert)
    assert cert[0x14:0x24] == signer[0x04:0x14], "certifying id is not the signer's key id"
    pss_verify(key, cert[sig_at:], cert[:sig_at])


def sev_key(cert: bytes) -> ec.EllipticCurvePublicKey:
    assert struct.unpack_from("<I", cert, 0x10) == (2,), "not a P-384 key"
    x, y = le(cert[0x14 : 0x14 + 72]), le(cert[0x5C : 0x5C + 72])
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()


def sev_verify(
    signer: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, usage: int, cert: bytes
) -> None:
    """The signature slot of *usage* in the SEV certificate *cert* verifies under *signer*."""
    slots = {struct.unpack_from("<I", cert, at)[0]: at for at in (0x414, 0x61C)}
    at = slots[usage]
    algo = struct.unpack_from("<I", cert, at + 4)[0]
    sig = cert[at + 8 : at + 8 + 0x200]
    body = cert[:0x414]
    if isinstance(signer, rsa.RSAPublicKey):
        assert algo == (0x1 if signer.key_size == 2048 else 0x101)
        pss_verify(signer, sig, body)
    else:
        assert algo == 0x2
        der = encode_dss_signature(le(sig[:72]), le(sig[72:144]))
        signer.verify(der, body, ec.ECDSA(hashes.SHA256()))


def verify_chain(certs: dict[str, bytes]) -> None:
    ark, ask, cek, oca, pek, pdh = (certs[n] for n in NAMES)
    ca_verify(ark, ark)
    ca_verify(ark, ask)
    sev_verify(ca_parts(ask)[0], 0x13, cek)
    sev_verify(sev_key(oca), 0x1001, oca)
    sev_verify(sev_key(oca), 0x1001, pek)
    sev_verify(sev_key(cek), 0x1004, pek)
    sev_verify(sev_key(pek), 0x1002, pdh)


def naples() -> dict[str, bytes]:
    return {
        name: ((NAPLES_CA if name in ("ark", "ask") else NAPLES) / f"{name}.cert").read_bytes()
        for name in NAMES
    }


def exported(tmp_path: Path) -> dict[str, bytes]:
    paths = shared_platform().export(tmp_path / "chain")
    assert sorted(p.name for p in paths) == sorted(f"{n}.cert" for n in NAMES)
    return {name: (tmp_path / "chain" / f"{name}.cert").read_bytes() for name in NAMES}


# --- the test's own owner side ---------------------------------------------------------


def kdf(key: bytes, label: bytes, context: bytes) -> bytes:
    """SP 800-108 counter mode, HMAC-SHA256; one block covers a 128-bit key."""
    block = (1).to_bytes(4, "little") + label + b"\0" + context + (128).to_bytes(4, "little")
    return hmac.digest(key, block, "sha256")[:16]


def godh_cert(key: ec.EllipticCurvePublicKey, usage: int = 0x1003, curve: int = 2) -> bytes:
    numbers = key.public_numbers()
    head = struct.pack("<IBBHII", 1, 0, 0, 0, usage, 0x3)
    pub = (
        struct.pack("<I", curve)
        + numbers.x.to_bytes(72, "little")
        + numbers.y.to_bytes(72, "little")
    )
    unsigned = struct.pack("<II", 0x1000, 0) + bytes(0x200)
    return (head + pub).ljust(0x414, b"\0") + 2 * unsigned


def owner_session(
    pdh: bytes, policy: int, keys: TransportKeys, godh: ec.EllipticCurvePrivateKey | None = None
) -> tuple[bytes, bytes]:
    """(GODH certificate, session buffer) for the platform whose PDH certificate is *pdh*."""
    godh = godh or ec.generate_private_key(ec.SECP384R1())
    z = godh.exchange(ec.ECDH(), sev_key(pdh))
    nonce, iv = bytes(range(16)), bytes(range(100, 116))
    master = kdf(z, b"sev-master-secret", nonce)
    kek, kik = kdf(master, b"sev-kek", b""), kdf(master, b"sev-kik", b"")
    wrap_tk = Cipher(algorithms.AES(kek), modes.CTR(iv)).encryptor().update(keys.tek + keys.tik)
    wrap_mac = hmac.digest(kik, wrap_tk, "sha256")
    policy_mac = hmac.digest(keys.tik, policy.to_bytes(4, "little"), "sha256")
    return godh_cert(godh.public_key()), nonce + wrap_tk + iv + wrap_mac + policy_mac


KEYS = TransportKeys(tek=bytes(range(32, 48)), tik=bytes(range(48, 64)))
PLAIN = SecretTable((disk_passphrase_entry(b"open sesame"),)).serialize()


def started(policy: int = POLICY, keys: TransportKeys = KEYS) -> SimulatedSecureElement:
    godh, session = owner_session(shared_platform().pdh.serialize(), policy, keys)
    return shared_platform().launch_start(godh, session, policy)


def owner_packet(psp: SimulatedSecureElement, firmware: bytes) -> tuple[bytes, bytes]:
    """The owner's real code: verify the launch, then seal PLAIN to its measurement."""
    measure = LaunchMeasure.from_base64(psp.launch_measure())
    verify_measurement(KEYS.tik, PlatformInfo(1, 55, 21, POLICY), launch_digest(firmware), measure)
    packet = build_packet(PLAIN, KEYS, measure.measurement)
    return packet.header, packet.payload


# --- the chain -------------------------------------------------------------------------


def test_the_checks_here_accept_amds_naples_chain() -> None:
    verify_chain(naples())


def test_the_checks_here_refuse_a_changed_certificate(tmp_path: Path) -> None:
    for certs in (naples(), exported(tmp_path)):
        pek = bytearray(certs["pek"])
        pek[0x20] ^= 1
        with pytest.raises(InvalidSignature):
            verify_chain({**certs, "pek": bytes(pek)})


def test_exported_chain_verifies_link_by_link(tmp_path: Path) -> None:
    verify_chain(exported(tmp_path))


def test_exported_chain_fields(tmp_path: Path) -> None:
    certs = exported(tmp_path)
    usages = {n: struct.unpack_from("<I", certs[n], 8)[0] for n in ("cek", "oca", "pek", "pdh")}
    assert usages == {"cek": 0x1004, "oca": 0x1001, "pek": 0x1002, "pdh": 0x1003}
    assert struct.unpack_from("<I", certs["pdh"], 12) == (0x3,)  # ECDH
    assert all(len(certs[n]) == 0x824 for n in usages)
    assert len(certs["ark"]) == len(certs["ask"]) == 64 + 3 * 256  # RSA-2048
    ark_id, ask_id = certs["ark"][4:20], certs["ask"][4:20]
    assert certs["ark"][20:36] == ark_id != ask_id
    assert struct.unpack_from("<I", certs["ark"], 36) == (0x00,)
    assert struct.unpack_from("<I", certs["ask"], 36) == (0x13,)
    assert shared_platform().chain.sevctl_chain() == b"".join(
        certs[n] for n in ("pdh", "pek", "oca", "cek", "ask", "ark")
    )


@pytest.mark.parametrize("name", NAMES)
def test_formats_round_trip_amds_certificates(name: str) -> None:
    data = naples()[name]
    if name in ("ark", "ask"):
        ca = simplatform.AmdCaCertificate.parse(data)
        assert ca.serialize() == data
        assert ca.public_key().public_numbers() == ca_parts(data)[0].public_numbers()
    else:
        cert = simplatform.SevCertificate.parse(data)
        assert cert.serialize() == data
        assert cert.public_key() == sev_key(data)
        assert cert.api_major == 0 and cert.api_minor in (14, 16)


def test_platforms_differ_and_one_is_shared() -> None:
    assert shared_platform() is shared_platform()
    other = SimulatedPlatform.generate()
    assert other.pdh.serialize() != shared_platform().pdh.serialize()
    assert repr(other) == "SimulatedPlatform(api 1.55 build 21)"


# --- LAUNCH_START ------------------------------------------------------------------


def test_virtee_kdf_vector() -> None:
    assert simplatform.kdf(bytes(16), b"sev-master-secret", bytes(16)) == KAT_MASTER
    assert kdf(bytes(16), b"sev-master-secret", bytes(16)) == KAT_MASTER


def test_virtee_session_vector_opens() -> None:
    session = SessionBuffer(bytes(16), KAT_WRAP_TK, bytes(16), KAT_WRAP_MAC, KAT_POLICY_MAC)
    keys = simplatform.open_session(bytes(16), session, 0)
    assert (keys.tek, keys.tik) == (bytes(16), bytes(16))
    assert SessionBuffer.parse(session.serialize()) == session
    with pytest.raises(VerificationError, match="policy MAC does not cover policy 0x1"):
        simplatform.open_session(bytes(16), session, 1)
    with pytest.raises(VerificationError, match="wrap MAC"):
        simplatform.open_session(bytes(15) + b"\1", session, 0)


def test_owner_flow_through_launch_start(amdsev_tail: bytes) -> None:
    psp = started()
    psp.launch_update_data(amdsev_tail)
    header, payload = owner_packet(psp, amdsev_tail)
    assert psp.launch_secret(header, payload) == PLAIN


def test_wrong_policy_is_refused() -> None:
    godh, session = owner_session(shared_platform().pdh.serialize(), 0x1, KEYS)
    with pytest.raises(VerificationError, match="policy MAC does not cover policy 0x5"):
        shared_platform().launch_start(godh, session, 0x5)


@pytest.mark.parametrize(
    ("field", "offset", "check"),
    [
        ("nonce", 3, "wrap MAC"),
        ("wrap_tk", 16 + 20, "wrap MAC"),
        ("wrap_iv", 48 + 15, "policy MAC"),
        ("wrap_mac", 64 + 31, "wrap MAC"),
        ("policy_mac", 96, "policy MAC"),
    ],
)
def test_flipped_session_byte_is_refused(field: str, offset: int, check: str) -> None:
    godh, session = owner_session(shared_platform().pdh.serialize(), POLICY, KEYS)
    changed = bytearray(session)
    changed[offset] ^= 0x80
    with pytest.raises(VerificationError, match=f"LAUNCH_START refused: the session's {check}"):
        shared_platform().launch_start(godh, bytes(changed), POLICY)


def test_flipped_godh_key_byte_is_refused() -> None:
    godh, session = owner_session(shared_platform().pdh.serialize(), POLICY, KEYS)
    changed = bytearray(godh)
    changed[0x14 + 7] ^= 1
    with pytest.raises(SecretFormatError, match="not a point on P-384"):
        shared_platform().launch_start(bytes(changed), session, POLICY)


def test_another_godh_key_is_refused() -> None:
    _, session = owner_session(shared_platform().pdh.serialize(), POLICY, KEYS)
    stranger = godh_cert(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(VerificationError, match="wrap MAC"):
        shared_platform().launch_start(stranger, session, POLICY)


def test_session_for_another_pdh_is_refused() -> None:
    other = SimulatedPlatform.generate()
    godh, session = owner_session(other.pdh.serialize(), POLICY, KEYS)
    other.launch_start(godh, session, POLICY)
    with pytest.raises(VerificationError, match="wrap MAC"):
        shared_platform().launch_start(godh, session, POLICY)


@pytest.mark.parametrize(
    ("godh", "session", "error", "match"),
    [
        ("ok", 127, SecretFormatError, "session buffer is 127 bytes"),
        ("short", 128, SecretFormatError, "2083 bytes"),
        ("pek", 128, SecretFormatError, "usage 0x1002"),
        ("p256", 128, SecretFormatError, "curve 1"),
    ],
)
def test_malformed_inputs_are_refused(
    godh: str, session: int, error: type[Exception], match: str
) -> None:
    good_godh, good_session = owner_session(shared_platform().pdh.serialize(), POLICY, KEYS)
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    cert = {
        "ok": good_godh,
        "short": good_godh[:-1],
        "pek": godh_cert(key, usage=0x1002),
        "p256": godh_cert(key, curve=1),
    }[godh]
    with pytest.raises(error, match=match):
        shared_platform().launch_start(cert, good_session[:session], POLICY)


def test_policy_checks() -> None:
    godh, session = owner_session(shared_platform().pdh.serialize(), POLICY, KEYS)
    with pytest.raises(ConfigError):
        shared_platform().launch_start(godh, session, 1 << 32)
    newer = POLICY | 2 << 16  # API 2.0 or later
    godh, session = owner_session(shared_platform().pdh.serialize(), newer, KEYS)
    with pytest.raises(VerificationError, match=r"asks for firmware API 2\.0 or later"):
        shared_platform().launch_start(godh, session, newer)


# --- replay ------------------------------------------------------------------------


def test_recorded_secret_is_refused_by_the_next_launch(amdsev_tail: bytes) -> None:
    """The host records a launch's GODH, session and secret packet, then replays them."""
    godh, session = owner_session(shared_platform().pdh.serialize(), POLICY, KEYS)
    first = shared_platform().launch_start(godh, session, POLICY)
    first.launch_update_data(amdsev_tail)
    header, payload = owner_packet(first, amdsev_tail)

    replayed = shared_platform().launch_start(godh, session, POLICY)
    replayed.launch_update_data(amdsev_tail)
    assert replayed.launch_measure() != first.launch_measure()
    with pytest.raises(VerificationError, match="MAC does not verify"):
        replayed.launch_secret(header, payload)

    fresh = started(keys=TransportKeys.generate())
    fresh.launch_update_data(amdsev_tail)
    fresh.launch_measure()
    with pytest.raises(VerificationError):
        fresh.launch_secret(header, payload)
    assert first.launch_secret(header, payload) == PLAIN


def test_keys_never_show() -> None:
    keys = simplatform.SessionKeys(tek=KEYS.tek, tik=KEYS.tik)
    assert KEYS.tek.hex() not in repr(keys) and "redacted" in repr(keys)
    assert repr(started()) == "SimulatedSecureElement(<keys redacted>)"


def test_measurement_is_bound_to_the_launched_policy(amdsev_tail: bytes) -> None:
    psp = started()
    psp.launch_update_data(amdsev_tail)
    measure = LaunchMeasure.from_base64(psp.launch_measure())
    digest = launch_digest(amdsev_tail)
    verify_measurement(KEYS.tik, PlatformInfo(1, 55, 21, POLICY), digest, measure)
    with pytest.raises(VerificationError):
        verify_measurement(KEYS.tik, PlatformInfo(1, 55, 21, 0x3), digest, measure)
