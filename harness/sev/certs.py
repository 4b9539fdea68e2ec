"""The certificates of the SEV platform and of AMD: formats and signature checks.

Two formats (AMD SEV API, publication 55766, appendix C; virtee ``sev``
``src/certs/sev/``). The platform's keys come in SEV certificates, 0x824 bytes::

    0x000 VERSION u32 (1)   API_MAJOR u8   API_MINOR u8   reserved u16
    0x008 PUBKEY_USAGE u32  PUBKEY_ALGO u32
    0x010 PUBKEY[0x404]     ECDSA/ECDH: CURVE u32 (2 = P-384) || QX[72] || QY[72],
                            little-endian, zero-padded
    0x414 SIG1_USAGE u32    SIG1_ALGO u32   SIG1[0x200]
    0x61C SIG2_USAGE u32    SIG2_ALGO u32   SIG2[0x200]

Each signature covers bytes 0x000-0x413. An ECDSA signature is R[72] || S[72],
little-endian (the rest of its slot is reserved and not checked); an RSA one (the
ASK's on the CEK) is one little-endian integer. A slot names the signer by its usage.

AMD's own keys, the ARK and the ASK of each EPYC generation, are RSA keys in AMD's CA
certificate format::

    VERSION u32 (1) || KEY_ID[16] || CERTIFYING_ID[16] || KEY_USAGE u32 ||
    reserved[16] || PUBEXP_SIZE u32 || MODULUS_SIZE u32 (both in bits) ||
    PUBEXP[PUBEXP_SIZE/8] || MODULUS[MODULUS_SIZE/8] || SIGNATURE[MODULUS_SIZE/8]

signed up to the signature with RSASSA-PSS (SHA-256 for 2048-bit keys, SHA-384 for
4096-bit ones, salt as long as the digest), the numbers little-endian. ``chain`` checks
how they sign each other.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from harness.errors import InputError


class Usage(enum.IntEnum):
    """PUBKEY_USAGE and SIGx_USAGE values."""

    ARK = 0x0000
    ASK = 0x0013
    INVALID = 0x1000
    OCA = 0x1001
    PEK = 0x1002
    PDH = 0x1003
    CEK = 0x1004


class Algo(enum.IntEnum):
    """PUBKEY_ALGO and SIGx_ALGO values."""

    NONE = 0x0000
    RSA_SHA256 = 0x0001
    ECDSA_SHA256 = 0x0002
    ECDH_SHA256 = 0x0003
    RSA_SHA384 = 0x0101
    ECDSA_SHA384 = 0x0102
    ECDH_SHA384 = 0x0103


SEV_CERT_SIZE = 0x824
SEV_HEADER = struct.Struct("<IBBHII")
PUBKEY_SIZE = 0x404
SIG_SLOT = struct.Struct("<II512s")
SIGNED_SIZE = SEV_HEADER.size + PUBKEY_SIZE  # 0x414
EC_POINT = struct.Struct("<I72s72s")
CURVE_P384 = 2
P384_BYTES = 48
ECDSA_FIELD = 72
CA_HEADER = struct.Struct("<I16s16sI16sII")
CA_MODULUS_BITS = {2048: hashes.SHA256, 4096: hashes.SHA384}
CERT_VERSION = 1
ECDSA = (Algo.ECDSA_SHA256, Algo.ECDSA_SHA384)
ECDH = (Algo.ECDH_SHA256, Algo.ECDH_SHA384)
#: The algorithms' SHA-384 variants set this bit.
SHA384_BIT = 0x100


@dataclass(frozen=True)
class SignatureSlot:
    """One of an SEV certificate's two signatures: ``{u32 usage; u32 algo; u8 sig[512]}``."""

    usage: int
    algo: int
    sig: bytes

    def serialize(self) -> bytes:
        return SIG_SLOT.pack(self.usage, self.algo, self.sig)


@dataclass(frozen=True)
class SevCertificate:
    """An SEV certificate (SEV API appendix C.1; sev-tool ``sev_cert``)::

        typedef struct sev_cert {
            uint32_t version; uint8_t api_major; uint8_t api_minor; uint16_t reserved;
            uint32_t pub_key_usage; uint32_t pub_key_algo; uint8_t pub_key[0x404];
            uint32_t sig_1_usage; uint32_t sig_1_algo; uint8_t sig_1[0x200];
            uint32_t sig_2_usage; uint32_t sig_2_algo; uint8_t sig_2[0x200];
        } sev_cert;

    Usages and algorithms are kept as read; the chain check judges them.
    """

    version: int
    api_major: int
    api_minor: int
    reserved: int
    usage: int
    algo: int
    pubkey: bytes
    sigs: tuple[SignatureSlot, SignatureSlot]

    @classmethod
    def parse(cls, data: bytes, source: str) -> SevCertificate:
        """Raises: InputError naming *source*: not 0x824 bytes, or a VERSION other than 1."""
        if len(data) != SEV_CERT_SIZE:
            raise InputError(
                f"{source} is {len(data)} bytes; an SEV certificate is {SEV_CERT_SIZE} (0x824)."
            )
        version, major, minor, reserved, usage, algo = SEV_HEADER.unpack_from(data)
        if version != CERT_VERSION:
            raise InputError(
                f"{source}: VERSION is {version}; only SEV certificate version 1 is known."
            )
        first, second = (
            SIG_SLOT.unpack_from(data, SIGNED_SIZE + i * SIG_SLOT.size) for i in (0, 1)
        )
        pubkey = data[SEV_HEADER.size : SIGNED_SIZE]
        sigs = (SignatureSlot(*first), SignatureSlot(*second))
        return cls(version, major, minor, reserved, usage, algo, pubkey, sigs)

    @property
    def body(self) -> bytes:
        """The signed bytes: everything before the first signature slot."""
        header = SEV_HEADER.pack(
            self.version, self.api_major, self.api_minor, self.reserved, self.usage, self.algo
        )
        return header + self.pubkey

    def serialize(self) -> bytes:
        return self.body + self.sigs[0].serialize() + self.sigs[1].serialize()

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The ECDSA or ECDH P-384 key.

        Raises:
            ValueError: another curve, or a point that is not on P-384.
        """
        curve, qx, qy = EC_POINT.unpack_from(self.pubkey)
        if curve != CURVE_P384:
            raise ValueError(f"curve {curve} is not P-384")
        x, y = int.from_bytes(qx, "little"), int.from_bytes(qy, "little")
        if max(x, y) >> (8 * P384_BYTES):
            raise ValueError("a coordinate is wider than P-384's 48 bytes")
        point = b"\x04" + x.to_bytes(P384_BYTES, "big") + y.to_bytes(P384_BYTES, "big")
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), point)

    @classmethod
    def with_public_key(
        cls, key: ec.EllipticCurvePublicKey, usage: Usage, algo: Algo
    ) -> SevCertificate:
        """An unsigned certificate for *key* (both slots INVALID), as virtee's sev crate
        makes the guest owner's GODH."""
        numbers = key.public_numbers()
        point = EC_POINT.pack(
            CURVE_P384,
            numbers.x.to_bytes(ECDSA_FIELD, "little"),
            numbers.y.to_bytes(ECDSA_FIELD, "little"),
        )
        empty = SignatureSlot(Usage.INVALID, Algo.NONE, bytes(512))
        pubkey = point.ljust(PUBKEY_SIZE, b"\0")
        return cls(CERT_VERSION, 0, 0, 0, usage, algo, pubkey, (empty, empty))


@dataclass(frozen=True)
class AmdCertificate:
    """AMD's CA certificate of an ARK or ASK (SEV API appendix C.2; sev-tool ``amd_cert``).

    ::

        typedef struct amd_cert {
            uint32_t version; uint8_t key_id[16]; uint8_t certifying_id[16];
            uint32_t key_usage; uint8_t reserved[16];
            uint32_t pub_exp_size; uint32_t modulus_size;   /* bits */
            uint8_t pub_exp[pub_exp_size/8]; uint8_t modulus[modulus_size/8];
            uint8_t sig[modulus_size/8];
        } amd_cert;
    """

    version: int
    key_id: bytes
    certifying_id: bytes
    usage: int
    reserved: bytes
    pubexp_bits: int
    modulus_bits: int
    pubexp: bytes
    modulus: bytes
    signature: bytes

    @classmethod
    def parse(cls, data: bytes, source: str) -> AmdCertificate:
        """Raises: InputError naming *source* and the field that does not fit."""
        if len(data) < CA_HEADER.size:
            raise InputError(f"{source} is {len(data)} bytes, too short for an AMD CA certificate.")
        version, kid, cid, usage, reserved, pbits, mbits = CA_HEADER.unpack_from(data)
        if version != CERT_VERSION:
            raise InputError(
                f"{source}: VERSION is {version}; only AMD CA certificate version 1 is known."
            )
        if mbits not in CA_MODULUS_BITS:
            raise InputError(
                f"{source}: MODULUS_SIZE is {mbits} bits; AMD's keys are 2048 or 4096."
            )
        if pbits % 8 or not 0 < pbits <= mbits:
            raise InputError(
                f"{source}: PUBEXP_SIZE {pbits} bits is not whole bytes up to the modulus'."
            )
        plen, mlen = pbits // 8, mbits // 8
        if len(data) != CA_HEADER.size + plen + 2 * mlen:
            raise InputError(
                f"{source} is {len(data)} bytes; with a {mbits}-bit key it is "
                f"{CA_HEADER.size + plen + 2 * mlen}."
            )
        rest = data[CA_HEADER.size :]
        key = (rest[:plen], rest[plen : plen + mlen], rest[plen + mlen :])
        return cls(version, kid, cid, usage, reserved, pbits, mbits, *key)

    @property
    def body(self) -> bytes:
        fields = (self.key_id, self.certifying_id, self.usage, self.reserved)
        header = CA_HEADER.pack(self.version, *fields, self.pubexp_bits, self.modulus_bits)
        return header + self.pubexp + self.modulus

    def serialize(self) -> bytes:
        return self.body + self.signature

    @property
    def hash(self) -> type[hashes.HashAlgorithm]:
        return CA_MODULUS_BITS[self.modulus_bits]

    @property
    def sev_algo(self) -> Algo:
        """The SIGx_ALGO an SEV certificate gives this key's signature."""
        return Algo.RSA_SHA256 if self.modulus_bits == 2048 else Algo.RSA_SHA384

    def public_key(self) -> rsa.RSAPublicKey:
        """Raises: ValueError: not a usable RSA key."""
        n, e = int.from_bytes(self.modulus, "little"), int.from_bytes(self.pubexp, "little")
        return rsa.RSAPublicNumbers(e, n).public_key()


def rsa_verifies(key: AmdCertificate, sig: bytes, message: bytes) -> bool:
    """RSASSA-PSS over *message* with a little-endian signature (zero above the modulus)."""
    value = int.from_bytes(sig, "little")
    size = key.modulus_bits // 8
    if value >> (8 * size):
        return False
    pss = padding.PSS(mgf=padding.MGF1(key.hash()), salt_length=padding.PSS.DIGEST_LENGTH)
    try:
        key.public_key().verify(value.to_bytes(size, "big"), message, pss, key.hash())
    except (InvalidSignature, ValueError):
        return False
    return True


def ecdsa_verifies(key: SevCertificate, slot: SignatureSlot, message: bytes) -> bool:
    r = int.from_bytes(slot.sig[:ECDSA_FIELD], "little")
    s = int.from_bytes(slot.sig[ECDSA_FIELD : 2 * ECDSA_FIELD], "little")
    try:
        public = key.public_key()
        public.verify(
            encode_dss_signature(r, s),
            message,
            ec.ECDSA(hashes.SHA384() if key.algo & SHA384_BIT else hashes.SHA256()),
        )
    except (InvalidSignature, ValueError):
        return False
    return True
