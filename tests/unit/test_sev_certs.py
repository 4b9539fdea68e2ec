"""SEV and AMD CA certificate formats: round trips, malformed files, the shipped roots.

The data are real: one Naples machine's exported chain (virtee's sev crate test data)
and AMD's ARK/ASK of four generations, with the sha256 sums recorded in
tests/data/README.md and harness/sev/roots/README.md.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from harness.errors import InputError
from harness.sev.certs import (
    SEV_CERT_SIZE,
    Algo,
    AmdCertificate,
    SevCertificate,
    Usage,
    ecdsa_verifies,
    rsa_verifies,
)
from tests.conftest import DATA

NAPLES = DATA / "sev-naples"
ROOT_SUMS = {
    "naples/ark.cert": "dedabca561e1dece8cc00b7bda864cf5f20b95017864408cfe18eaee0dce24b9",
    "naples/ask.cert": "c6f30cf923f526c3bcd5c8c221db51e0db65911782f046de17a6603131cdfd7f",
    "rome/ark.cert": "865977b268c16d5b27772b00aaefb4e737ba9499e818ed8e9f65b0cecefbc529",
    "rome/ask.cert": "7754a69407d25540fe3a695be6b02c58a53bffd12594f5c30793d6cb62875706",
    "milan/ark.cert": "1246469862b78a7a8625579b0378d1f8e975eb8b82a1623b579d7968a5969888",
    "milan/ask.cert": "c7c73765561c58003a3d09adb2c76993027dd3a1ec4e9be876024c035e015cec",
    "genoa/ark.cert": "8f4e3fd36589c23f1fe0c8338465bac7e2e066d97fc92f228bbee4fd356fb674",
    "genoa/ask.cert": "c30307e4f594fb6c51fd753ab758eb78ad4bb70d9e4d96690e51c0621901031d",
}
PLATFORM_SUMS = {
    "cek.cert": "cbecc40f5b7d7e988fe7e4af20195cc540404eb685a2b49df0160781d04cf8f4",
    "oca.cert": "dfa8331592774030cc38716ee0d436aba269d7c17c78e2a261f19e967377c34c",
    "pdh.cert": "34b11563c32bd17b4e2b4b8205301af64e7bd06a85e2a6ada789bc9d5dfd9932",
    "pek.cert": "31243368c2046fbf48e51a73075c33e69600cee1876919869f0383a94e8df558",
}


def root_bytes(name: str) -> bytes:
    return (importlib.resources.files("harness.sev") / "roots" / name).read_bytes()


@pytest.mark.parametrize("name", sorted(ROOT_SUMS))
def test_shipped_roots_are_amds(name: str) -> None:
    """The package data (as an installed package reads it) matches the recorded sums."""
    assert hashlib.sha256(root_bytes(name)).hexdigest() == ROOT_SUMS[name]


@pytest.mark.parametrize("name", sorted(PLATFORM_SUMS))
def test_platform_test_data_is_the_crates(name: str) -> None:
    assert hashlib.sha256((NAPLES / name).read_bytes()).hexdigest() == PLATFORM_SUMS[name]


@pytest.mark.parametrize("gen", ["naples", "rome", "milan", "genoa"])
def test_each_ark_signs_itself_and_its_ask(gen: str) -> None:
    ark = AmdCertificate.parse(root_bytes(f"{gen}/ark.cert"), "ark")
    ask = AmdCertificate.parse(root_bytes(f"{gen}/ask.cert"), "ask")
    assert (ark.usage, ask.usage) == (Usage.ARK, Usage.ASK)
    assert ark.key_id == ark.certifying_id == ask.certifying_id
    assert ark.modulus_bits == (2048 if gen == "naples" else 4096)
    assert rsa_verifies(ark, ark.signature, ark.body)
    assert rsa_verifies(ark, ask.signature, ask.body)
    assert not rsa_verifies(ask, ask.signature, ask.body)


@pytest.mark.parametrize("name", sorted(ROOT_SUMS))
def test_amd_certificate_round_trip(name: str) -> None:
    raw = root_bytes(name)
    assert AmdCertificate.parse(raw, name).serialize() == raw


@pytest.mark.parametrize("name", sorted(PLATFORM_SUMS))
def test_sev_certificate_round_trip(name: str) -> None:
    raw = (NAPLES / name).read_bytes()
    cert = SevCertificate.parse(raw, name)
    assert cert.serialize() == raw
    assert len(cert.body) == 0x414
    assert cert.public_key().curve.name == "secp384r1"


def test_fields_of_the_naples_pek() -> None:
    """The PEK carries the OCA's and the CEK's signatures, ECDSA SHA-256 both."""
    pek = SevCertificate.parse((NAPLES / "pek.cert").read_bytes(), "pek.cert")
    assert (pek.version, pek.usage, pek.algo) == (1, Usage.PEK, Algo.ECDSA_SHA256)
    assert [(s.usage, s.algo) for s in pek.sigs] == [
        (Usage.OCA, Algo.ECDSA_SHA256),
        (Usage.CEK, Algo.ECDSA_SHA256),
    ]
    oca = SevCertificate.parse((NAPLES / "oca.cert").read_bytes(), "oca.cert")
    assert ecdsa_verifies(oca, pek.sigs[0], pek.body)
    assert not ecdsa_verifies(oca, pek.sigs[1], pek.body)


def test_unsigned_certificate_for_a_key() -> None:
    """As virtee's crate writes a GODH: version 1, API 0.0, both slots INVALID/NONE."""
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    cert = SevCertificate.with_public_key(key, Usage.PDH, Algo.ECDH_SHA256)
    raw = cert.serialize()
    assert len(raw) == SEV_CERT_SIZE
    assert struct.unpack_from("<IBBHII", raw) == (1, 0, 0, 0, 0x1003, 0x3)
    assert struct.unpack_from("<III", raw, 0x10)[0] == 2  # P-384
    assert struct.unpack_from("<II", raw, 0x414) == (0x1000, 0)
    assert struct.unpack_from("<II", raw, 0x61C) == (0x1000, 0)
    assert cert.public_key().public_numbers() == key.public_numbers()
    assert SevCertificate.parse(raw, "godh").serialize() == raw


def test_sev_certificate_size_and_version() -> None:
    raw = (NAPLES / "pdh.cert").read_bytes()
    with pytest.raises(InputError, match=r"^pdh.cert is 2083 bytes; an SEV certificate is 2084"):
        SevCertificate.parse(raw[:-1], "pdh.cert")
    with pytest.raises(InputError, match=r"^pdh.cert: VERSION is 2;"):
        SevCertificate.parse(b"\x02" + raw[1:], "pdh.cert")


def test_amd_certificate_fields() -> None:
    raw = root_bytes("rome/ask.cert")
    with pytest.raises(InputError, match=r"^ask: MODULUS_SIZE is 4097 bits"):
        AmdCertificate.parse(raw[:0x3C] + struct.pack("<I", 4097) + raw[0x40:], "ask")
    with pytest.raises(InputError, match=r"^ask: PUBEXP_SIZE 12 bits"):
        AmdCertificate.parse(raw[:0x38] + struct.pack("<I", 12) + raw[0x3C:], "ask")
    with pytest.raises(InputError, match=r"^ask is 1599 bytes; with a 4096-bit key it is 1600"):
        AmdCertificate.parse(raw[:-1], "ask")
    with pytest.raises(InputError, match=r"^ask is 10 bytes, too short"):
        AmdCertificate.parse(raw[:10], "ask")
    with pytest.raises(InputError, match=r"^ask: VERSION is 0;"):
        AmdCertificate.parse(b"\0" + raw[1:], "ask")


def test_public_key_refuses_another_curve_and_wide_coordinates() -> None:
    cert = SevCertificate.parse((NAPLES / "pdh.cert").read_bytes(), "pdh.cert")
    raw = bytearray(cert.serialize())
    raw[0x10] = 1  # P-256
    with pytest.raises(ValueError, match="not P-384"):
        SevCertificate.parse(bytes(raw), "x").public_key()
    raw[0x10] = 2
    raw[0x14 + 48] = 1  # a bit above QX's 48 bytes
    with pytest.raises(ValueError, match="wider"):
        SevCertificate.parse(bytes(raw), "x").public_key()
