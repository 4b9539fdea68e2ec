"""The simulated secure element: its own crypto on the published vectors, its independence
from the owner's code, and the owner's real flow against it."""

from __future__ import annotations

import ast
import base64
import hashlib
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.errors import ConfigError, SecretFormatError, VerificationError
from harness.firmware import guids
from harness.sev import simplatform, simulated
from harness.sev.measure import LaunchMeasure, PlatformInfo, launch_digest, verify_measurement
from harness.sev.packet import TransportKeys, build_packet
from harness.sev.secret import SecretTable, disk_passphrase_entry
from harness.sev.simulated import SimulatedSecureElement
from tests.unit import test_sev_measure as mvec
from tests.unit import test_sev_packet as pvec

KEYS = TransportKeys(tek=bytes(range(16)), tik=bytes(range(16, 32)))
PLATFORM = PlatformInfo(1, 55, 21, 0x33)
KERNEL = b"fake vmlinuz\n"
INITRD = b"fake initrd\n"
CMDLINE = "console=ttyS0"


def launched(firmware: bytes, keys: TransportKeys = KEYS) -> SimulatedSecureElement:
    psp = SimulatedSecureElement(keys, PLATFORM)
    psp.launch_update_data(firmware)
    return psp


def measured(psp: SimulatedSecureElement) -> LaunchMeasure:
    """The element's answer as the owner reads QMP's: through its own base64 parser."""
    return LaunchMeasure.from_base64(psp.launch_measure())


def secret_for(psp: SimulatedSecureElement, plain: bytes, keys: TransportKeys = KEYS) -> bytes:
    packet = build_packet(plain, keys, measured(psp).measurement)
    return psp.launch_secret(packet.header, packet.payload)


# --- independence --------------------------------------------------------------------

#: What each platform-side module may import: the standard library, cryptography, the
#: error classes, and (for the platform) the element and the private-file writer.
ALLOWED_IMPORTS = {
    simulated: {
        "__future__", "base64", "hashlib", "hmac", "os", "struct", "typing", "uuid",
        "cryptography.hazmat.primitives.ciphers", "harness.errors",
    },
    simplatform: {
        "__future__", "enum", "functools", "hmac", "os", "struct", "collections.abc",
        "dataclasses", "pathlib", "cryptography.hazmat.primitives",
        "cryptography.hazmat.primitives.asymmetric",
        "cryptography.hazmat.primitives.asymmetric.utils", "harness.errors",
        "harness.files", "harness.sev.simulated",
    },
}  # fmt: skip
#: The guest owner's modules, which the platform side must never import.
OWNER_MODULES = (
    "harness.sev.measure", "harness.sev.packet", "harness.sev.secret", "harness.sev.owner",
    "harness.sev.policy", "harness.sev.certs", "harness.sev.chain", "harness.sev.session",
    "harness.sev.vmsa", "harness.sev.snp", "harness.boots", "harness.firmware",
)  # fmt: skip


@pytest.mark.parametrize("module", [simulated, simplatform], ids=lambda m: m.__name__)
def test_platform_side_imports_none_of_the_owner_code(module: ModuleType) -> None:
    tree = ast.parse(Path(str(module.__file__)).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            imported.add(node.module or "")
            if node.module == "harness.sev":  # from harness.sev import owner
                imported.update(f"harness.sev.{alias.name}" for alias in node.names)
    assert imported <= ALLOWED_IMPORTS[module], imported - ALLOWED_IMPORTS[module]
    assert not any(name.startswith(OWNER_MODULES) for name in imported)


# --- the element's own crypto on the published vectors ------------------------------


def test_measurement_matches_sevctl_m1() -> None:
    platform = PlatformInfo(1, 40, 40, 3)
    mac = simulated.measure_hmac(mvec.M_TIK, platform, mvec.M1_DIGEST, mvec.M_NONCE)
    assert mac + mvec.M_NONCE == mvec.M1_OUT


def test_measurement_matches_the_sev_crate_with_no_data() -> None:
    keys = TransportKeys(tek=bytes(16), tik=mvec.SEV_TIK)
    psp = SimulatedSecureElement(keys, mvec.SEV_PLATFORM)
    answer = base64.b64decode(psp.launch_measure(mnonce=mvec.SEV_MNONCE))
    assert answer == mvec.SEV_MEASURE + mvec.SEV_MNONCE


def test_kernel_hashes_table_matches_sevctl() -> None:
    assert (
        simulated.kernel_hashes(mvec.FAKE_KERNEL, mvec.FAKE_INITRD, mvec.FAKE_CMDLINE)
        == mvec.KERNEL_TABLE
    )
    assert simulated.HASHES_HEADER == guids.SEV_HASH_TABLE_HEADER
    assert simulated.HASHES_KERNEL == guids.SEV_KERNEL_ENTRY


@pytest.mark.parametrize(
    ("initrd", "cmdline"), [(None, None), (b"", ""), (b"\0", None), (None, "quiet"), (b"x", "")]
)
def test_kernel_hashes_table_matches_sev_snp_measure(
    tmp_path: Path, initrd: bytes | None, cmdline: str | None
) -> None:
    """Absent initrd and command line hash as empty, as sev-snp-measure (and QEMU) do."""
    theirs = mvec._ssm_table(tmp_path, mvec.FAKE_KERNEL, initrd, cmdline)
    assert simulated.kernel_hashes(mvec.FAKE_KERNEL, initrd, cmdline) == theirs


@pytest.mark.parametrize("name", sorted(pvec.VECTORS))
def test_element_opens_sevctl_packets(name: str) -> None:
    _, table, payload, mac_msg, header, _, _ = pvec.VECTORS[name]
    assert simulated.aes_ctr(pvec.TEK, pvec.IV, table) == payload
    assert simulated.secret_mac(pvec.TIK, 0, pvec.IV, payload, pvec.MEASURE) == header[20:]
    assert mac_msg.startswith(b"\x01\x00\x00\x00\x00" + pvec.IV)
    opened = simulated.open_secret(pvec.TEK, pvec.TIK, header, payload, pvec.MEASURE)
    assert opened == table


def test_aes_ctr_counts_across_the_whole_block() -> None:
    """The counter block is one 128-bit big-endian number, carries included."""
    counter = bytes([0] * 8 + [0xFF] * 8)
    stream = simulated.aes_ctr(KEYS.tek, counter, bytes(48))
    ctr = Cipher(algorithms.AES(KEYS.tek), modes.CTR(counter)).encryptor()
    assert stream == ctr.update(bytes(48)) + ctr.finalize()
    wrap = simulated.aes_ctr(KEYS.tek, b"\xff" * 16, bytes(32))
    assert wrap[16:] == simulated.aes_ctr(KEYS.tek, bytes(16), bytes(16))


# --- the element refuses what it should ----------------------------------------------


@pytest.mark.parametrize("flags", [1, 2, 0x8000_0000])
def test_element_refuses_nonzero_flags(flags: int) -> None:
    header = flags.to_bytes(4, "little") + pvec.S1_HEADER[4:]
    with pytest.raises(SecretFormatError, match="FLAGS"):
        simulated.open_secret(pvec.TEK, pvec.TIK, header, pvec.S1_PAYLOAD, pvec.MEASURE)


@pytest.mark.parametrize(("header", "payload"), [(51, 64), (53, 64), (52, 0), (52, 63)])
def test_element_refuses_malformed_packets(header: int, payload: int) -> None:
    with pytest.raises(SecretFormatError):
        simulated.open_secret(pvec.TEK, pvec.TIK, bytes(header), bytes(payload), pvec.MEASURE)


def test_element_refuses_a_tampered_packet() -> None:
    tampered = bytearray(pvec.S1_PAYLOAD)
    tampered[0] ^= 1
    with pytest.raises(VerificationError):
        simulated.open_secret(pvec.TEK, pvec.TIK, pvec.S1_HEADER, bytes(tampered), pvec.MEASURE)


def test_repr_never_shows_keys() -> None:
    psp = SimulatedSecureElement(KEYS, PLATFORM)
    assert KEYS.tek.hex() not in repr(psp) and "redacted" in repr(psp)


# --- the owner's code against the element --------------------------------------------


def test_measurement_verifies_for_the_firmware_it_was_fed(amdsev_tail: bytes) -> None:
    measure = measured(launched(amdsev_tail))
    verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measure)


def test_measurement_with_kernel_hashes_verifies(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    psp.launch_update_kernel_hashes(KERNEL, INITRD, CMDLINE)
    measure = measured(psp)
    verify_measurement(
        KEYS.tik, PLATFORM, launch_digest(amdsev_tail, KERNEL, INITRD, CMDLINE), measure
    )
    with pytest.raises(VerificationError):
        verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measure)
    with pytest.raises(VerificationError):
        verify_measurement(
            KEYS.tik, PLATFORM, launch_digest(amdsev_tail, KERNEL, INITRD, "quiet"), measure
        )


def test_measurement_of_other_firmware_does_not_verify(amdsev_tail: bytes) -> None:
    changed = bytearray(amdsev_tail)
    changed[0x100] ^= 0x01
    measure = measured(launched(bytes(changed)))
    with pytest.raises(VerificationError):
        verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measure)
    other_platform = PlatformInfo(1, 55, 21, 0x01)
    with pytest.raises(VerificationError):
        verify_measurement(KEYS.tik, other_platform, launch_digest(bytes(changed)), measure)


def test_chunked_updates_measure_like_one_update(amdsev_tail: bytes) -> None:
    psp = SimulatedSecureElement(KEYS, PLATFORM)
    for start in range(0, len(amdsev_tail), 1000):
        psp.launch_update_data(amdsev_tail[start : start + 1000])
    verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measured(psp))


def test_fresh_nonce_each_launch(amdsev_tail: bytes) -> None:
    measures = [measured(launched(amdsev_tail)) for _ in range(4)]
    assert len({m.mnonce for m in measures}) == 4
    assert len({m.measurement for m in measures}) == 4
    for m in measures:
        verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), m)


def test_launch_measure_is_final(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    first = psp.launch_measure()
    assert psp.launch_measure() == first
    with pytest.raises(ConfigError):
        psp.launch_update_data(b"more")
    with pytest.raises(ConfigError):
        psp.launch_update_kernel_hashes(KERNEL, None, None)
    assert psp.launch_measure() == first


def test_launch_secret_before_launch_measure_is_a_config_error(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    plain = SecretTable((disk_passphrase_entry(b"pw"),)).serialize()
    packet = build_packet(plain, KEYS, bytes(32))
    with pytest.raises(ConfigError):
        psp.launch_secret(packet.header, packet.payload)


def test_owner_flow_delivers_the_passphrase(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measured(psp))
    plain = SecretTable((disk_passphrase_entry(b"open sesame"),)).serialize(area_size=0xC00)
    table = SecretTable.parse(secret_for(psp, plain))
    entry = table.get(guids.DISK_PASSPHRASE_ENTRY)
    assert entry is not None
    assert entry.data == b"open sesame\0"


def test_packet_for_another_launch_is_refused(amdsev_tail: bytes) -> None:
    first, second = launched(amdsev_tail), launched(amdsev_tail)
    m1, m2 = measured(first), measured(second)
    assert m1.measurement != m2.measurement
    plain = SecretTable((disk_passphrase_entry(b"pw"),)).serialize()
    packet = build_packet(plain, KEYS, m1.measurement)
    with pytest.raises(VerificationError):
        second.launch_secret(packet.header, packet.payload)
    assert first.launch_secret(packet.header, packet.payload) == plain


def test_packet_with_other_keys_is_refused(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    plain = SecretTable((disk_passphrase_entry(b"pw"),)).serialize()
    with pytest.raises(VerificationError):
        secret_for(psp, plain, TransportKeys.generate())


def test_digest_of_no_data_is_sha256_of_nothing() -> None:
    """What the sev crate vector relies on: a launch that measured nothing."""
    assert hashlib.sha256(b"").digest() == mvec.SEV_DIGEST
