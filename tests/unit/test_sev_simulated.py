"""The simulated secure element against the guest owner's real verification code."""

from __future__ import annotations

import pytest

from harness.errors import ConfigError, VerificationError
from harness.firmware import guids
from harness.sev.measure import (
    LaunchMeasure,
    PlatformInfo,
    kernel_hashes_table,
    launch_digest,
    verify_measurement,
)
from harness.sev.packet import TransportKeys, build_packet
from harness.sev.secret import SecretTable, disk_passphrase_entry
from harness.sev.simulated import SimulatedSecureElement

KEYS = TransportKeys(tek=bytes(range(16)), tik=bytes(range(16, 32)))
PLATFORM = PlatformInfo(1, 55, 21, 0x33)
KERNEL = b"fake vmlinuz\n"
INITRD = b"fake initrd\n"
CMDLINE = "console=ttyS0"

# The sev crate's verify vector: its digest is sha256(b""), i.e. a launch with no data.
SEV_TIK = bytes.fromhex("66320db73158a35a255d051758e95ed4")
SEV_MNONCE = bytes.fromhex("4fbe0bedbad6c86ae8f68971d103e554")
SEV_MEASURE = bytes.fromhex("6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea")


def launched(firmware: bytes, keys: TransportKeys = KEYS) -> SimulatedSecureElement:
    psp = SimulatedSecureElement(keys, PLATFORM)
    psp.launch_update_data(firmware)
    return psp


def test_measurement_verifies_for_the_firmware_it_was_fed(amdsev_tail: bytes) -> None:
    measure = launched(amdsev_tail).launch_measure()
    verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measure)
    # And through QMP's base64 form.
    again = LaunchMeasure.from_base64(measure.to_base64())
    verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), again)


def test_measurement_with_kernel_hashes_verifies(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    table = psp.launch_update_kernel_hashes(KERNEL, INITRD, CMDLINE)
    assert table == kernel_hashes_table(KERNEL, INITRD, CMDLINE)
    measure = psp.launch_measure()
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
    measure = launched(bytes(changed)).launch_measure()
    with pytest.raises(VerificationError):
        verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measure)
    other_platform = PlatformInfo(1, 55, 21, 0x01)
    with pytest.raises(VerificationError):
        verify_measurement(KEYS.tik, other_platform, launch_digest(bytes(changed)), measure)


def test_chunked_updates_measure_like_one_update(amdsev_tail: bytes) -> None:
    psp = SimulatedSecureElement(KEYS, PLATFORM)
    for start in range(0, len(amdsev_tail), 1000):
        psp.launch_update_data(amdsev_tail[start : start + 1000])
    verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), psp.launch_measure())


def test_sev_crate_vector_with_a_fixed_nonce() -> None:
    keys = TransportKeys(tek=bytes(16), tik=SEV_TIK)
    psp = SimulatedSecureElement(keys, PlatformInfo(0, 0x12, 0x0F, 0))
    measure = psp.launch_measure(mnonce=SEV_MNONCE)
    assert measure == LaunchMeasure(SEV_MEASURE, SEV_MNONCE)


def test_fresh_nonce_each_launch(amdsev_tail: bytes) -> None:
    measures = [launched(amdsev_tail).launch_measure() for _ in range(4)]
    assert len({m.mnonce for m in measures}) == 4
    assert len({m.measurement for m in measures}) == 4
    for m in measures:
        assert len(m.mnonce) == 16
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
        psp.launch_secret(packet)


def test_owner_flow_delivers_the_passphrase(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    measure = LaunchMeasure.from_base64(psp.launch_measure().to_base64())
    verify_measurement(KEYS.tik, PLATFORM, launch_digest(amdsev_tail), measure)
    plain = SecretTable((disk_passphrase_entry(b"open sesame"),)).serialize(area_size=0xC00)
    table = SecretTable.parse(psp.launch_secret(build_packet(plain, KEYS, measure.measurement)))
    entry = table.get(guids.DISK_PASSPHRASE_ENTRY)
    assert entry is not None
    assert entry.data == b"open sesame\0"


def test_packet_for_another_launch_is_refused(amdsev_tail: bytes) -> None:
    first, second = launched(amdsev_tail), launched(amdsev_tail)
    m1, m2 = first.launch_measure(), second.launch_measure()
    assert m1.measurement != m2.measurement
    plain = SecretTable((disk_passphrase_entry(b"pw"),)).serialize()
    packet = build_packet(plain, KEYS, m1.measurement)
    with pytest.raises(VerificationError):
        second.launch_secret(packet)
    assert first.launch_secret(packet) == plain


def test_packet_with_other_keys_is_refused(amdsev_tail: bytes) -> None:
    psp = launched(amdsev_tail)
    measure = psp.launch_measure()
    plain = SecretTable((disk_passphrase_entry(b"pw"),)).serialize()
    with pytest.raises(VerificationError):
        psp.launch_secret(build_packet(plain, TransportKeys.generate(), measure.measurement))
