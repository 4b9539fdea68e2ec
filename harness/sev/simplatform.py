"""The simulated SEV platform: its certificate chain and LAUNCH_START, for hosts without SEV.

Like ``simulated.py`` this is a FAKE of AMD's PSP, written apart from the guest owner's
code (``certs``, ``session``, ``measure``, ``packet``, ``secret``, ``owner``, ``policy``;
a unit test checks the imports). It owns a PDH key pair and makes its whole chain
itself: ARK and ASK in AMD's CA certificate format (RSA-2048, as Naples; later parts use
RSA-4096, 2048 keeps key generation near 0.1 s), then CEK, OCA, PEK and PDH as SEV
certificates (P-384). LAUNCH_START takes the owner's GODH certificate and session
buffer, agrees a key with ECDH, derives KEK and KIK, checks and unwraps TEK||TIK, checks
the policy MAC, and hands back a ``SimulatedSecureElement`` for the rest of the launch.

Facts, not code, from: AMD SEV API (publication 55766) appendix C and LAUNCH_START;
AMDESE/sev-tool ``src/sevapi.h`` (the C structures quoted below), ``src/crypto.cpp``
(``kdf``) and ``src/commands.cpp`` (``build_session_buffer``); virtee/sev
``src/certs/sev`` and ``src/session``. Where the spec leaves room, this reads it as the
two public owner tools that work against real PSPs do:

- Z, the ECDH shared secret, is the x coordinate of the shared point as 48 big-endian
  bytes, as OpenSSL's ECDH returns it (sev-tool ``calculate_shared_secret``, virtee
  ``PrivateKey::derive``), not little-endian like the certificate fields.
- The KDF's counter i and length L are u32 little-endian: sev-tool feeds HMAC the
  native x86 words, virtee writes ``to_le_bytes``.
- RSA-PSS salt length is the digest length (virtee ``crypto.rs``; sev-tool recovers any).
- P-384 keys sign with ECDSA over SHA-256 (algorithm 0x2), as AMD's Naples and Rome
  certificates do; RSA-2048 signs with SHA-256, RSA-4096 with SHA-384.
- LAUNCH_START does not check the GODH certificate's signatures (sev-tool
  ``create_godh_cert``: the firmware does not validate the GODH signature).
"""

from __future__ import annotations

import enum
import functools
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from harness.errors import ConfigError, SecretFormatError, VerificationError
from harness.files import write_private
from harness.sev.simulated import SimulatedSecureElement, aes_ctr


class Usage(enum.IntEnum):
    """AMD SEV API appendix C.1, key usage."""

    ARK = 0x0000
    ASK = 0x0013
    INVALID = 0x1000
    OCA = 0x1001
    PEK = 0x1002
    PDH = 0x1003
    CEK = 0x1004


class Algorithm(enum.IntEnum):
    """AMD SEV API appendix C.1, public key and signature algorithms."""

    NONE = 0x000
    RSA_SHA256 = 0x001
    ECDSA_SHA256 = 0x002
    ECDH_SHA256 = 0x003
    RSA_SHA384 = 0x101
    ECDSA_SHA384 = 0x102
    ECDH_SHA384 = 0x103


ECDH_ALGORITHMS = (Algorithm.ECDH_SHA256, Algorithm.ECDH_SHA384)
#: SEV_EC_P384, the only curve the PSP's SEV keys use.
CURVE_P384 = 2
P384_BYTES = 48
#: qx, qy, r and s each fill a 576-bit field, little-endian.
COMPONENT_BYTES = 72
RSA_BITS = 2048
RSA_EXPONENT = 65537

# struct sev_cert (0x824 bytes): u32 version; u8 api_major, api_minor, reserved[2];
# u32 pub_key_usage, pub_key_algo; u8 pub_key[0x404];
# u32 sig_1_usage, sig_1_algo; u8 sig_1[0x200]; u32 sig_2_usage, sig_2_algo; u8 sig_2[0x200].
SEV_CERT_HEAD = struct.Struct("<IBB2sII")
KEY_AREA = 0x404
SIG_HEAD = struct.Struct("<II")
SIG_AREA = 0x200
#: The signed part: version through pub_key.
SEV_CERT_BODY = SEV_CERT_HEAD.size + KEY_AREA
SEV_CERT_SIZE = SEV_CERT_BODY + 2 * (SIG_HEAD.size + SIG_AREA)
# struct sev_ecdsa_pub_key / sev_ecdh_pub_key: u32 curve; u8 qx[72], qy[72], rmbz[880].
EC_KEY = struct.Struct(f"<I{COMPONENT_BYTES}s{COMPONENT_BYTES}s")
# struct sev_ecdsa_sig: u8 r[72], s[72], rmbz[368]; struct sev_rsa_sig: u8 s[512].
ECDSA_SIG = struct.Struct(f"<{COMPONENT_BYTES}s{COMPONENT_BYTES}s")

# struct amd_cert: u32 version; u8 key_id[16], certifying_id[16]; u32 key_usage;
# u8 reserved[16]; u32 pub_exp_size, modulus_size (bits); then pub_exp, modulus, sig,
# each little-endian, of pub_exp_size/8, modulus_size/8 and modulus_size/8 bytes.
CA_CERT_HEAD = struct.Struct("<I16s16sI16sII")
CA_KEY_BITS = (2048, 4096)

# struct sev_session_buf: u8 nonce[16], wrap_tk[32], wrap_iv[16], wrap_mac[32], policy_mac[32].
SESSION = struct.Struct("<16s32s16s32s32s")
KEY_BYTES = 16

#: NIST SP 800-108 labels of LAUNCH_START's key schedule.
MASTER_LABEL = b"sev-master-secret"
KEK_LABEL = b"sev-kek"
KIK_LABEL = b"sev-kik"

#: The file names of the exported chain (sev-tool ``--export_cert_chain``).
CHAIN_FILES = ("pdh.cert", "pek.cert", "oca.cert", "cek.cert", "ask.cert", "ark.cert")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _int_le(data: bytes) -> int:
    return int.from_bytes(data, "little")


# --- certificate formats -------------------------------------------------------------


@dataclass(frozen=True)
class SevSignature:
    """One signature slot of a SEV certificate: {u32 usage; u32 algo; u8 sig[0x200]}."""

    usage: int
    algorithm: int
    data: bytes

    @classmethod
    def empty(cls) -> SevSignature:
        return cls(Usage.INVALID, Algorithm.NONE, bytes(SIG_AREA))

    def serialize(self) -> bytes:
        return SIG_HEAD.pack(self.usage, self.algorithm) + self.data


@dataclass(frozen=True)
class SevCertificate:
    """A SEV certificate (AMD SEV API appendix C.1, sev-tool ``sev_cert``; 0x824 bytes).

    The key and signature areas are kept as raw bytes, so parse() and serialize() are
    exact inverses; ``public_key()`` reads the area as an ECC key.
    """

    usage: int
    algorithm: int
    key_area: bytes
    signatures: tuple[SevSignature, SevSignature]
    api_major: int = 0
    api_minor: int = 0
    reserved: bytes = bytes(2)

    @classmethod
    def parse(cls, data: bytes, what: str = "SEV certificate") -> SevCertificate:
        """Raises: SecretFormatError: not 0x824 bytes, or a version other than 1."""
        if len(data) != SEV_CERT_SIZE:
            raise SecretFormatError(f"The {what} is {len(data)} bytes; it is {SEV_CERT_SIZE}.")
        version, major, minor, reserved, usage, algo = SEV_CERT_HEAD.unpack_from(data)
        if version != 1:
            raise SecretFormatError(f"The {what} has version {version}; only 1 is known.")
        sigs = []
        for offset in (SEV_CERT_BODY, SEV_CERT_BODY + SIG_HEAD.size + SIG_AREA):
            sig_usage, sig_algo = SIG_HEAD.unpack_from(data, offset)
            start = offset + SIG_HEAD.size
            sigs.append(SevSignature(sig_usage, sig_algo, data[start : start + SIG_AREA]))
        key_area = data[SEV_CERT_HEAD.size : SEV_CERT_BODY]
        return cls(usage, algo, key_area, (sigs[0], sigs[1]), major, minor, reserved)

    def body(self) -> bytes:
        """What the signatures cover: version through the public key."""
        head = SEV_CERT_HEAD.pack(
            1, self.api_major, self.api_minor, self.reserved, self.usage, self.algorithm
        )
        return head + self.key_area

    def serialize(self) -> bytes:
        return self.body() + b"".join(sig.serialize() for sig in self.signatures)

    def public_key(self, what: str = "SEV certificate") -> ec.EllipticCurvePublicKey:
        """The P-384 key of the certificate.

        Raises:
            SecretFormatError: another curve, or a point that is not on P-384.
        """
        curve, qx, qy = EC_KEY.unpack_from(self.key_area)
        if curve != CURVE_P384:
            raise SecretFormatError(f"The {what}'s key is on curve {curve}; only P-384 (2).")
        numbers = ec.EllipticCurvePublicNumbers(_int_le(qx), _int_le(qy), ec.SECP384R1())
        try:
            return numbers.public_key()
        except ValueError as err:
            raise SecretFormatError(f"The {what}'s key is not a point on P-384.") from err


def ec_key_area(key: ec.EllipticCurvePublicKey) -> bytes:
    """The public key area of a SEV certificate for a P-384 key."""
    numbers = key.public_numbers()
    packed = EC_KEY.pack(
        CURVE_P384, _le(numbers.x, COMPONENT_BYTES), _le(numbers.y, COMPONENT_BYTES)
    )
    return packed.ljust(KEY_AREA, b"\0")


@dataclass(frozen=True)
class AmdCaCertificate:
    """An ARK or ASK certificate in AMD's own format (sev-tool ``amd_cert``).

    ``exponent``, ``modulus`` and ``signature`` are the little-endian fields as stored.
    """

    key_id: bytes
    certifying_id: bytes
    usage: int
    exponent_bits: int
    modulus_bits: int
    exponent: bytes
    modulus: bytes
    signature: bytes
    reserved: bytes = bytes(16)

    @classmethod
    def parse(cls, data: bytes, what: str = "AMD CA certificate") -> AmdCaCertificate:
        """Raises: SecretFormatError: truncated, version other than 1, or odd key sizes."""
        if len(data) < CA_CERT_HEAD.size:
            raise SecretFormatError(f"The {what} is {len(data)} bytes, shorter than its header.")
        version, key_id, cert_id, usage, reserved, e_bits, n_bits = CA_CERT_HEAD.unpack_from(data)
        if version != 1:
            raise SecretFormatError(f"The {what} has version {version}; only 1 is known.")
        if e_bits not in CA_KEY_BITS or n_bits not in CA_KEY_BITS:
            raise SecretFormatError(
                f"The {what} has a {e_bits}-bit exponent field and a {n_bits}-bit modulus; "
                "each is 2048 or 4096."
            )
        e_end = CA_CERT_HEAD.size + e_bits // 8
        n_end = e_end + n_bits // 8
        if len(data) != n_end + n_bits // 8:
            raise SecretFormatError(
                f"The {what} is {len(data)} bytes; its header says {n_end + n_bits // 8}."
            )
        return cls(
            key_id, cert_id, usage, e_bits, n_bits,
            data[CA_CERT_HEAD.size : e_end], data[e_end:n_end], data[n_end:], reserved,
        )  # fmt: skip

    def body(self) -> bytes:
        """What the signature covers: everything before it."""
        head = CA_CERT_HEAD.pack(
            1, self.key_id, self.certifying_id, self.usage, self.reserved,
            self.exponent_bits, self.modulus_bits,
        )  # fmt: skip
        return head + self.exponent + self.modulus

    def serialize(self) -> bytes:
        return self.body() + self.signature

    def public_key(self) -> rsa.RSAPublicKey:
        numbers = rsa.RSAPublicNumbers(_int_le(self.exponent), _int_le(self.modulus))
        return numbers.public_key()


# --- signing the chain ---------------------------------------------------------------


def _rsa_hash(key: rsa.RSAPrivateKey) -> hashes.HashAlgorithm:
    return hashes.SHA256() if key.key_size <= 2048 else hashes.SHA384()


def _rsa_pss(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSASSA-PSS, MGF1 and salt of the digest's length; big-endian signature."""
    digest = _rsa_hash(key)
    pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return key.sign(message, pss, digest)


def sign_sev(signer_usage: Usage, key: PrivateKey, body: bytes) -> SevSignature:
    """A signature slot over a SEV certificate body by *key*."""
    if isinstance(key, rsa.RSAPrivateKey):
        algo = Algorithm.RSA_SHA256 if key.key_size <= 2048 else Algorithm.RSA_SHA384
        data = _rsa_pss(key, body)[::-1]
    else:
        r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
        algo = Algorithm.ECDSA_SHA256
        data = ECDSA_SIG.pack(_le(r, COMPONENT_BYTES), _le(s, COMPONENT_BYTES))
    return SevSignature(signer_usage, algo, data.ljust(SIG_AREA, b"\0"))


def _ca_cert(
    key: rsa.RSAPrivateKey, usage: Usage, key_id: bytes, signer: rsa.RSAPrivateKey, signer_id: bytes
) -> AmdCaCertificate:
    size = key.key_size // 8
    numbers = key.public_key().public_numbers()
    unsigned = AmdCaCertificate(
        key_id, signer_id, usage, key.key_size, key.key_size,
        _le(numbers.e, size), _le(numbers.n, size), b"",
    )  # fmt: skip
    signature = _rsa_pss(signer, unsigned.body())[::-1].ljust(signer.key_size // 8, b"\0")
    return replace(unsigned, signature=signature)


def _sev_cert(
    usage: Usage,
    algorithm: Algorithm,
    key: ec.EllipticCurvePrivateKey,
    version: tuple[int, int],
    signers: Sequence[tuple[Usage, PrivateKey | None]],
) -> SevCertificate:
    """A SEV certificate for *key*; a signer of None is the key itself (self-signed)."""
    unsigned = SevCertificate(
        usage, algorithm, ec_key_area(key.public_key()),
        (SevSignature.empty(), SevSignature.empty()), *version,
    )  # fmt: skip
    body = unsigned.body()
    sigs = [sign_sev(u, key if k is None else k, body) for u, k in signers]
    sigs += [SevSignature.empty()] * (2 - len(sigs))
    return replace(unsigned, signatures=(sigs[0], sigs[1]))


@dataclass(frozen=True)
class PlatformChain:
    """The platform's certificates: PDH ← PEK ← (OCA, CEK ← ASK ← ARK)."""

    ark: AmdCaCertificate
    ask: AmdCaCertificate
    cek: SevCertificate
    oca: SevCertificate
    pek: SevCertificate
    pdh: SevCertificate

    def files(self) -> dict[str, bytes]:
        """File name to bytes, as sev-tool's ``--export_cert_chain`` names them."""
        sev = [c.serialize() for c in (self.pdh, self.pek, self.oca, self.cek)]
        blobs = [*sev, self.ask.serialize(), self.ark.serialize()]
        return dict(zip(CHAIN_FILES, blobs, strict=True))

    def export(self, directory: Path) -> tuple[Path, ...]:
        """Write the six ``.cert`` files into *directory* (created if missing).

        They are written with ``write_private``: all or none, mode 0600.

        Raises:
            InputError: the directory cannot be written.
        """
        directory.mkdir(parents=True, exist_ok=True)
        files = {directory / name: data for name, data in self.files().items()}
        write_private(files)
        return tuple(files)

    def sevctl_chain(self) -> bytes:
        """``sevctl export --full``'s one file: PDH, PEK, OCA, CEK, then ASK, ARK."""
        return b"".join(self.files().values())


# --- LAUNCH_START --------------------------------------------------------------------


def kdf(key: bytes, label: bytes, context: bytes, length: int = KEY_BYTES) -> bytes:
    """NIST SP 800-108 KDF in counter mode with HMAC-SHA256 as the PRF.

    Block i is ``HMAC(key, u32le(i) || label || 0x00 || context || u32le(8 * length))``
    for i from 1; the output is their concatenation cut to *length* bytes.
    """
    tail = b"\0" + context + _le(8 * length, 4)
    blocks = (length + 31) // 32
    out = b"".join(
        hmac.digest(key, _le(i, 4) + label + tail, "sha256") for i in range(1, blocks + 1)
    )
    return out[:length]


@dataclass(frozen=True)
class SessionBuffer:
    """LAUNCH_START's session data (sev-tool ``sev_session_buf``; 128 bytes)::

    struct { u8 nonce[16]; u8 wrap_tk[32]; u8 wrap_iv[16]; u8 wrap_mac[32]; u8 policy_mac[32]; }
    """

    nonce: bytes
    wrap_tk: bytes
    wrap_iv: bytes
    wrap_mac: bytes
    policy_mac: bytes

    @classmethod
    def parse(cls, data: bytes) -> SessionBuffer:
        """Raises: SecretFormatError: not 128 bytes."""
        if len(data) != SESSION.size:
            raise SecretFormatError(
                f"The LAUNCH_START session buffer is {len(data)} bytes; it is {SESSION.size}."
            )
        return cls(*SESSION.unpack(data))

    def serialize(self) -> bytes:
        return SESSION.pack(self.nonce, self.wrap_tk, self.wrap_iv, self.wrap_mac, self.policy_mac)


@dataclass(frozen=True, repr=False)
class SessionKeys:
    """The TEK and TIK the element unwrapped from a session."""

    tek: bytes
    tik: bytes

    def __repr__(self) -> str:  # never print key material
        return "SessionKeys(<redacted>)"


@dataclass(frozen=True)
class LaunchReport:
    """What the element binds into LAUNCH_MEASURE: firmware API version, build, policy."""

    api_major: int
    api_minor: int
    build: int
    policy: int


def open_session(z: bytes, session: SessionBuffer, policy: int) -> SessionKeys:
    """What the PSP does with a session once it has the shared secret *z*.

    master = KDF(z, "sev-master-secret", NONCE); KEK = KDF(master, "sev-kek");
    KIK = KDF(master, "sev-kik"); WRAP_MAC must be HMAC-SHA256(KIK, WRAP_TK);
    TEK||TIK = AES-128-CTR(KEK, WRAP_IV, WRAP_TK); POLICY_MAC must be
    HMAC-SHA256(TIK, u32le(policy)).

    Raises:
        VerificationError: the wrap MAC or the policy MAC does not verify.
    """
    master = kdf(z, MASTER_LABEL, session.nonce)
    kek, kik = kdf(master, KEK_LABEL, b""), kdf(master, KIK_LABEL, b"")
    if not hmac.compare_digest(hmac.digest(kik, session.wrap_tk, "sha256"), session.wrap_mac):
        raise VerificationError(
            "LAUNCH_START refused: the session's wrap MAC does not verify under the KIK "
            "agreed with this platform's PDH.",
            hint="the session was made for another platform's PDH, or its GODH key, "
            "nonce or wrapped keys were changed on the way.",
        )
    unwrapped = aes_ctr(kek, session.wrap_iv, session.wrap_tk)
    keys = SessionKeys(tek=unwrapped[:KEY_BYTES], tik=unwrapped[KEY_BYTES:])
    expected = hmac.digest(keys.tik, _le(policy, 4), "sha256")
    if not hmac.compare_digest(expected, session.policy_mac):
        raise VerificationError(
            f"LAUNCH_START refused: the session's policy MAC does not cover policy "
            f"{policy:#x}, the policy the host launches with.",
            hint="the owner signed another policy; the host may not change it.",
        )
    return keys


class SimulatedPlatform:
    """A simulated PSP: its PDH key pair, its certificate chain, and LAUNCH_START.

    Usage::

        platform = SimulatedPlatform.generate()       # or shared_platform()
        platform.chain.export(directory)               # pdh.cert ... ark.cert
        psp = platform.launch_start(godh_cert, session, policy)  # VerificationError
        psp.launch_update_data(firmware); psp.launch_measure(); psp.launch_secret(...)
    """

    def __init__(
        self,
        chain: PlatformChain,
        pdh_key: ec.EllipticCurvePrivateKey,
        api_major: int,
        api_minor: int,
        build: int,
    ) -> None:
        if pdh_key.public_key() != chain.pdh.public_key():
            raise ConfigError("The PDH private key does not match the chain's PDH certificate.")
        self.chain = chain
        self._pdh_key = pdh_key
        self.api_major, self.api_minor, self.build = api_major, api_minor, build

    def __repr__(self) -> str:  # never print key material
        return f"SimulatedPlatform(api {self.api_major}.{self.api_minor} build {self.build})"

    @classmethod
    def generate(
        cls, api_major: int = 1, api_minor: int = 55, build: int = 21
    ) -> SimulatedPlatform:
        """A platform with fresh keys and a chain of its own (~0.2 s: two RSA-2048 keys)."""
        ark_key = rsa.generate_private_key(RSA_EXPONENT, RSA_BITS)
        ask_key = rsa.generate_private_key(RSA_EXPONENT, RSA_BITS)
        ark_id, ask_id = os.urandom(16), os.urandom(16)
        ark = _ca_cert(ark_key, Usage.ARK, ark_id, ark_key, ark_id)
        ask = _ca_cert(ask_key, Usage.ASK, ask_id, ark_key, ark_id)
        version = (api_major, api_minor)
        cek_key, oca_key, pek_key, pdh_key = (
            ec.generate_private_key(ec.SECP384R1()) for _ in range(4)
        )
        ecdsa = Algorithm.ECDSA_SHA256
        cek = _sev_cert(Usage.CEK, ecdsa, cek_key, version, [(Usage.ASK, ask_key)])
        oca = _sev_cert(Usage.OCA, ecdsa, oca_key, version, [(Usage.OCA, None)])
        pek = _sev_cert(
            Usage.PEK, ecdsa, pek_key, version, [(Usage.OCA, oca_key), (Usage.CEK, cek_key)]
        )
        pdh = _sev_cert(Usage.PDH, Algorithm.ECDH_SHA256, pdh_key, version, [(Usage.PEK, pek_key)])
        chain = PlatformChain(ark=ark, ask=ask, cek=cek, oca=oca, pek=pek, pdh=pdh)
        return cls(chain, pdh_key, api_major, api_minor, build)

    @property
    def pdh(self) -> SevCertificate:
        return self.chain.pdh

    def export(self, directory: Path) -> tuple[Path, ...]:
        """Write the chain's six ``.cert`` files; see ``PlatformChain.export``."""
        return self.chain.export(directory)

    def launch_start(self, godh_cert: bytes, session: bytes, policy: int) -> SimulatedSecureElement:
        """LAUNCH_START: a new launch context, keyed by the owner's session, for *policy*.

        Every call is a new launch with its own transport keys and, at LAUNCH_MEASURE,
        its own nonce: a LAUNCH_SECRET packet made for one launch fails the next one's
        MAC, even when the host replays the same GODH and session.

        Raises:
            ConfigError: *policy* does not fit in 32 bits.
            SecretFormatError: a malformed GODH certificate or session buffer.
            VerificationError: the policy asks for newer firmware, or the wrap MAC or
                the policy MAC does not verify.
        """
        if not 0 <= policy <= 0xFFFFFFFF:
            raise ConfigError(f"The policy must fit in 32 bits, not {policy:#x}.")
        self._check_firmware(policy)
        buffer = SessionBuffer.parse(session)
        godh = SevCertificate.parse(godh_cert, "GODH certificate")
        if godh.usage != Usage.PDH or godh.algorithm not in ECDH_ALGORITHMS:
            raise SecretFormatError(
                f"The GODH certificate has usage {godh.usage:#x} and algorithm "
                f"{godh.algorithm:#x}; LAUNCH_START takes a PDH-usage (0x1003) ECDH key."
            )
        z = self._pdh_key.exchange(ec.ECDH(), godh.public_key("GODH certificate"))
        keys = open_session(z, buffer, policy)
        report = LaunchReport(self.api_major, self.api_minor, self.build, policy)
        return SimulatedSecureElement(keys, report)

    def _check_firmware(self, policy: int) -> None:
        # Our reading of LAUNCH_START: the policy's API_MAJOR (bits 16-23) and
        # API_MINOR (bits 24-31) name the oldest firmware the guest accepts.
        wanted = (policy >> 16 & 0xFF, policy >> 24 & 0xFF)
        if wanted > (self.api_major, self.api_minor):
            raise VerificationError(
                f"LAUNCH_START refused: policy {policy:#x} asks for firmware API "
                f"{wanted[0]}.{wanted[1]} or later; this platform runs "
                f"{self.api_major}.{self.api_minor}."
            )


@functools.cache
def shared_platform() -> SimulatedPlatform:
    """One platform per process, for tests and scenarios that need any platform."""
    return SimulatedPlatform.generate()
