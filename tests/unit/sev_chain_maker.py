"""A self-made SEV certificate chain, for tests that need private keys.

Real chains (tests/data/sev-naples) come without them; this one signs its own ARK,
ASK, CEK, OCA, PEK and PDH, written here from the format description in
``harness.sev.certs`` with ``cryptography`` doing the signing, so a test can trust it
with ``Roots.of`` and open a session to a PDH whose private key it holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from harness.sev.certs import CA_HEADER, Algo, SevCertificate, Usage

RSA_BITS = 2048


def _pss_le(key: rsa.RSAPrivateKey, body: bytes, size: int) -> bytes:
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    signature = key.sign(body, pss, hashes.SHA256())
    return int.from_bytes(signature, "big").to_bytes(size, "little")


def ca_cert(
    key: rsa.RSAPrivateKey,
    key_id: bytes,
    certifying_id: bytes,
    usage: int,
    signer: rsa.RSAPrivateKey,
) -> bytes:
    """An AMD CA certificate for a 2048-bit *key*, signed by *signer*."""
    size = RSA_BITS // 8
    numbers = key.public_key().public_numbers()
    body = CA_HEADER.pack(1, key_id, certifying_id, usage, bytes(16), RSA_BITS, RSA_BITS)
    body += numbers.e.to_bytes(size, "little") + numbers.n.to_bytes(size, "little")
    return body + _pss_le(signer, body, size)


def _slot(usage: int, algo: int, sig: bytes) -> bytes:
    return usage.to_bytes(4, "little") + algo.to_bytes(4, "little") + sig.ljust(512, b"\0")


def ecdsa_slot(signer: ec.EllipticCurvePrivateKey, usage: int, body: bytes) -> bytes:
    r, s = decode_dss_signature(signer.sign(body, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    return _slot(usage, Algo.ECDSA_SHA256, sig)


def sev_cert(body: bytes, slots: list[bytes]) -> bytes:
    empty = _slot(Usage.INVALID, Algo.NONE, b"")
    return body + b"".join(slots + [empty] * (2 - len(slots)))


def sev_body(key: ec.EllipticCurvePrivateKey, usage: Usage) -> bytes:
    algo = Algo.ECDH_SHA256 if usage == Usage.PDH else Algo.ECDSA_SHA256
    return SevCertificate.with_public_key(key.public_key(), usage, algo).body


@dataclass(frozen=True)
class MadeChain:
    """The six certificates as files would hold them, and the PDH's private key."""

    files: dict[str, bytes]
    pdh_private: ec.EllipticCurvePrivateKey


@cache
def made_chain() -> MadeChain:
    """One self-made chain per test session (RSA key generation is the slow part)."""
    ark = rsa.generate_private_key(65537, RSA_BITS)
    ask = rsa.generate_private_key(65537, RSA_BITS)
    ark_id, ask_id = os.urandom(16), os.urandom(16)
    keys = {
        u: ec.generate_private_key(ec.SECP384R1())
        for u in (Usage.CEK, Usage.OCA, Usage.PEK, Usage.PDH)
    }
    cek_body = sev_body(keys[Usage.CEK], Usage.CEK)
    cek_slot = _slot(Usage.ASK, Algo.RSA_SHA256, _pss_le(ask, cek_body, 512))
    oca_body = sev_body(keys[Usage.OCA], Usage.OCA)
    pek_body = sev_body(keys[Usage.PEK], Usage.PEK)
    pdh_body = sev_body(keys[Usage.PDH], Usage.PDH)
    files = {
        "ark": ca_cert(ark, ark_id, ark_id, Usage.ARK, ark),
        "ask": ca_cert(ask, ask_id, ark_id, Usage.ASK, ark),
        "cek": sev_cert(cek_body, [cek_slot]),
        "oca": sev_cert(oca_body, [ecdsa_slot(keys[Usage.OCA], Usage.OCA, oca_body)]),
        "pek": sev_cert(
            pek_body,
            [
                ecdsa_slot(keys[Usage.OCA], Usage.OCA, pek_body),
                ecdsa_slot(keys[Usage.CEK], Usage.CEK, pek_body),
            ],
        ),
        "pdh": sev_cert(pdh_body, [ecdsa_slot(keys[Usage.PEK], Usage.PEK, pdh_body)]),
    }
    return MadeChain(files, keys[Usage.PDH])
