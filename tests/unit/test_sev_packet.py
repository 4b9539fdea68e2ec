"""LAUNCH_SECRET packets: sevctl known answers, round trips, tampering, key handling.

The vectors S1 and S2 are virtee/sevctl ``tests/secretbuild.rs`` (commit 516cf41), with
the key files recovered in /work/research/sevctl.md; they are reproduced byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable
from uuid import UUID

import pytest

from harness.errors import HarnessError, InputError, SecretFormatError, VerificationError
from harness.firmware import guids
from harness.sev.measure import LaunchMeasure, PlatformInfo
from harness.sev.packet import (
    HEADER,
    LaunchSecret,
    TransportKeys,
    build_packet,
    open_packet,
    packet_mac,
)
from harness.sev.secret import SecretEntry, SecretTable, disk_passphrase_entry
from harness.sev.simulated import SimulatedSecureElement

TEK = bytes.fromhex("52a869b79ab9c13bb6a92b0561619cb3")
TIK = bytes.fromhex("c6d5a9956133050912b24bbe5c372686")
IV = bytes.fromhex("ac5474ed4dd32c7d989ec523d92559ec")
IV_B64 = "rFR07U3TLH2YnsUj2SVZ7A=="
LAUNCH_MEASURE_BLOB_B64 = "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS"
MEASURE = bytes.fromhex("4cb780efad3b959427b4b8d1635fe2fac6ed75267eef9cf1a73e0fc7d873a412")

GUID_1 = UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
GUID_2 = UUID("736869e5-aaaa-4973-92ec-06879ce3da0b")
SECRET_1 = b"MY-LUKS-PASSPHRASE"
SECRET_2 = b"SOME OTHER SECRET"

S1_TABLE = bytes.fromhex(
    "42f5741edd71664d963eef4287ff173b3a000000e5696873f084734992ec06879ce3da0b26000000"
    "4d592d4c554b532d50415353504852415345000000000000"
)
S1_PAYLOAD = bytes.fromhex(
    "d14ddee4f717bf4516f87e2d48114a39d0987ca135fa3dfc05cd9fb8ed7a9988b223eb16c7b20d7e"
    "7fa58188f9e862f5db2ca29c36be9557c20b00ffdb0e5c3c"
)
S1_MAC_MSG = bytes.fromhex(
    "0100000000ac5474ed4dd32c7d989ec523d92559ec4000000040000000d14ddee4f717bf4516f87e2d"
    "48114a39d0987ca135fa3dfc05cd9fb8ed7a9988b223eb16c7b20d7e7fa58188f9e862f5db2ca29c36"
    "be9557c20b00ffdb0e5c3c4cb780efad3b959427b4b8d1635fe2fac6ed75267eef9cf1a73e0fc7d873"
    "a412"
)
S1_HEADER = bytes.fromhex(
    "00000000ac5474ed4dd32c7d989ec523d92559ecbc152cde610e17f0aef557334a2d4fca42c22c43"
    "12e3b5b85a3d47b0aac857e5"
)
S1_HEADER_B64 = "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q=="
S1_PAYLOAD_B64 = (
    "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA=="
)

S2_TABLE = bytes.fromhex(
    "42f5741edd71664d963eef4287ff173b5f000000e5696873f084734992ec06879ce3da0b26000000"
    "4d592d4c554b532d50415353504852415345e5696873aaaa734992ec06879ce3da0b25000000534f"
    "4d45204f544845522053454352455400"
)
S2_PAYLOAD = bytes.fromhex(
    "d14ddee4f717bf4516f87e2d48114a39b5987ca135fa3dfc05cd9fb8ed7a9988b223eb16c7b20d7e"
    "7fa58188f9e862f5db2ca29c36be9557c20be596b37df69692cd517d5923760aeef620b72b385feb"
    "86c4422590843dd2ff3fc3c64599031e"
)
S2_MAC_MSG = bytes.fromhex(
    "0100000000ac5474ed4dd32c7d989ec523d92559ec6000000060000000d14ddee4f717bf4516f87e2d"
    "48114a39b5987ca135fa3dfc05cd9fb8ed7a9988b223eb16c7b20d7e7fa58188f9e862f5db2ca29c36"
    "be9557c20be596b37df69692cd517d5923760aeef620b72b385feb86c4422590843dd2ff3fc3c64599"
    "031e4cb780efad3b959427b4b8d1635fe2fac6ed75267eef9cf1a73e0fc7d873a412"
)
S2_HEADER = bytes.fromhex(
    "00000000ac5474ed4dd32c7d989ec523d92559ec99debd1d38428750e84846acc6618bd326074cb4"
    "13cbd672ba183f5a1844fb36"
)
S2_HEADER_B64 = "AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng=="
S2_PAYLOAD_B64 = (
    "0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCC+WWs332"
    "lpLNUX1ZI3YK7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe"
)

S1_ENTRIES = (SecretEntry(GUID_1, SECRET_1),)
S2_ENTRIES = (SecretEntry(GUID_1, SECRET_1), SecretEntry(GUID_2, SECRET_2))

#: (entries, plaintext table, payload, MAC message, header, header b64, payload b64)
Vector = tuple[tuple[SecretEntry, ...], bytes, bytes, bytes, bytes, str, str]
VECTORS: dict[str, Vector] = {
    "S1": (S1_ENTRIES, S1_TABLE, S1_PAYLOAD, S1_MAC_MSG, S1_HEADER, S1_HEADER_B64, S1_PAYLOAD_B64),
    "S2": (S2_ENTRIES, S2_TABLE, S2_PAYLOAD, S2_MAC_MSG, S2_HEADER, S2_HEADER_B64, S2_PAYLOAD_B64),
}


def sevctl_keys() -> TransportKeys:
    return TransportKeys(tek=TEK, tik=TIK)


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


# --- known answers -------------------------------------------------------------------


def test_vector_inputs_decode_as_sevctl_does() -> None:
    assert base64.b64decode(IV_B64) == IV
    # sevctl binds the packet to the first 32 bytes of the blob and ignores the nonce.
    assert LaunchMeasure.from_base64(LAUNCH_MEASURE_BLOB_B64).measurement == MEASURE
    assert guids.DISK_PASSPHRASE_ENTRY == GUID_1


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_plaintext_table_matches_sevctl(name: str) -> None:
    entries, table, *_ = VECTORS[name]
    plain = SecretTable(entries).serialize()
    assert plain == table
    # The header's len field is the unpadded length (58 and 95 in sevctl's test data).
    (length,) = struct.unpack_from("<I", plain, 16)
    assert length == {"S1": 58, "S2": 95}[name]
    assert SecretTable(entries).length == length


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_packet_matches_sevctl_byte_for_byte(name: str) -> None:
    entries, table, payload, mac_msg, header, header_b64, payload_b64 = VECTORS[name]
    packet = build_packet(SecretTable(entries).serialize(), sevctl_keys(), MEASURE, iv=IV)
    assert packet.flags == 0
    assert packet.iv == IV
    assert packet.payload == payload
    assert packet.header == header
    assert len(packet.header) == HEADER.size == 52
    assert base64.b64encode(packet.header).decode() == header_b64
    assert base64.b64encode(packet.payload).decode() == payload_b64
    # The MAC is HMAC-SHA256(TIK, the exact message sevctl builds).
    assert packet.mac == hmac.new(TIK, mac_msg, hashlib.sha256).digest()
    assert packet_mac(TIK, 0, IV, payload, MEASURE) == packet.mac
    assert len(table) == len(payload)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_sevctl_packet_opens_to_its_table(name: str) -> None:
    entries, table, payload, _, header, *_ = VECTORS[name]
    packet = LaunchSecret.parse(header, payload)
    plain = open_packet(packet, sevctl_keys(), MEASURE)
    assert plain == table
    assert SecretTable.parse(plain).entries == entries


def test_disk_passphrase_entry_differs_from_sevctl_only_by_its_nul() -> None:
    """Our passphrase entry adds one NUL: both lengths grow by one, the padding shrinks."""
    ours = SecretTable((disk_passphrase_entry(SECRET_1),)).serialize()
    expected = bytearray(S1_TABLE)
    expected[16] = 0x3B  # header len 58 -> 59
    expected[36] = 0x27  # entry len 38 -> 39
    assert ours == bytes(expected)
    parsed = SecretTable.parse(ours).get(guids.DISK_PASSPHRASE_ENTRY)
    assert parsed is not None
    assert parsed.data == SECRET_1 + b"\0"


# --- round trips ---------------------------------------------------------------------


def test_round_trip_with_random_iv() -> None:
    table = SecretTable(S2_ENTRIES).serialize()
    first = build_packet(table, sevctl_keys(), MEASURE)
    second = build_packet(table, sevctl_keys(), MEASURE)
    assert first.iv != second.iv  # sevctl's property: no --iv, different output
    assert first.payload != second.payload
    for packet in (first, second):
        again = LaunchSecret.parse(packet.header, packet.payload)
        assert again == packet
        assert open_packet(again, sevctl_keys(), MEASURE) == table


def test_round_trip_through_simulated_secure_element() -> None:
    keys = sevctl_keys()
    psp = SimulatedSecureElement(keys, PlatformInfo(1, 40, 40, 3))
    psp.launch_update_data(b"firmware image bytes")
    measure = LaunchMeasure.from_base64(psp.launch_measure(mnonce=bytes(range(16))))
    table = SecretTable(S2_ENTRIES).serialize()
    packet = build_packet(table, keys, measure.measurement, iv=IV)
    assert psp.launch_secret(packet.header, packet.payload) == table
    # The S1 packet is bound to sevctl's measurement, not to this launch.
    with pytest.raises(VerificationError):
        psp.launch_secret(S1_HEADER, S1_PAYLOAD)


# --- tampering -----------------------------------------------------------------------

Tamper = Callable[[bytes, bytes], tuple[bytes, bytes]]
TAMPERS: dict[str, Tamper] = {
    "iv-first-bit": lambda h, p: (flip(h, 4), p),
    "iv-last-bit": lambda h, p: (flip(h, 19, 0x80), p),
    "mac-first-bit": lambda h, p: (flip(h, 20), p),
    "mac-last-bit": lambda h, p: (flip(h, 51, 0x80), p),
    "payload-first-byte": lambda h, p: (h, flip(p, 0, 0xFF)),
    "payload-last-byte": lambda h, p: (h, flip(p, len(p) - 1)),
    "payload-truncated": lambda h, p: (h, p[:-16]),
    "payload-extended": lambda h, p: (h, p + bytes(16)),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_packet_is_refused(name: str) -> None:
    header, payload = TAMPERS[name](S1_HEADER, S1_PAYLOAD)
    packet = LaunchSecret.parse(header, payload)
    with pytest.raises(VerificationError):
        open_packet(packet, sevctl_keys(), MEASURE)


@pytest.mark.parametrize("flags", [1, 2, 0x8000_0000, 0xFFFF_FFFF])
def test_nonzero_flags_are_refused_wherever_a_header_is_read(flags: int) -> None:
    header = struct.pack("<I", flags) + S1_HEADER[4:]
    with pytest.raises(SecretFormatError, match=f"FLAGS {flags:#x}"):
        LaunchSecret.parse(header, S1_PAYLOAD)
    # A packet made in code rather than parsed is refused when opened, before its MAC.
    packet = LaunchSecret.parse(S1_HEADER, S1_PAYLOAD)
    forged = LaunchSecret(flags, packet.iv, packet.mac, packet.payload)
    with pytest.raises(SecretFormatError, match="FLAGS"):
        open_packet(forged, sevctl_keys(), MEASURE)


def test_other_measurement_is_refused() -> None:
    packet = LaunchSecret.parse(S1_HEADER, S1_PAYLOAD)
    for other in (flip(MEASURE, 0), flip(MEASURE, 31, 0x80), bytes(32)):
        with pytest.raises(VerificationError):
            open_packet(packet, sevctl_keys(), other)


def test_wrong_tik_is_refused() -> None:
    packet = LaunchSecret.parse(S1_HEADER, S1_PAYLOAD)
    with pytest.raises(VerificationError):
        open_packet(packet, TransportKeys(tek=TEK, tik=flip(TIK, 0)), MEASURE)
    # Swapping the keys (a TEK/TIK mix-up) is refused as well.
    with pytest.raises(VerificationError):
        open_packet(packet, TransportKeys(tek=TIK, tik=TEK), MEASURE)


def test_verification_error_is_a_harness_error_with_exit_1() -> None:
    packet = LaunchSecret.parse(S1_HEADER, S1_PAYLOAD)
    with pytest.raises(HarnessError) as info:
        open_packet(packet, sevctl_keys(), bytes(32))
    assert isinstance(info.value, VerificationError)
    assert info.value.exit_code == 1


# --- packet format errors ------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 51, 53, 64])
def test_parse_rejects_bad_header_length(size: int) -> None:
    with pytest.raises(SecretFormatError):
        LaunchSecret.parse(bytes(size), S1_PAYLOAD)


@pytest.mark.parametrize("size", [0, 1, 15, 17, 63])
def test_parse_rejects_bad_payload_length(size: int) -> None:
    with pytest.raises(SecretFormatError):
        LaunchSecret.parse(S1_HEADER, bytes(size))


def test_build_rejects_bad_arguments() -> None:
    keys = sevctl_keys()
    with pytest.raises(SecretFormatError):
        build_packet(S1_TABLE[:-1], keys, MEASURE, iv=IV)
    with pytest.raises(SecretFormatError):
        build_packet(b"", keys, MEASURE, iv=IV)
    # The 48-byte QMP blob is not a measurement: only its first 32 bytes are.
    for measurement in (MEASURE[:31], MEASURE + IV, b""):
        with pytest.raises(InputError):
            build_packet(S1_TABLE, keys, measurement, iv=IV)
    for iv in (IV[:15], IV + b"\0", b""):
        with pytest.raises(InputError):
            build_packet(S1_TABLE, keys, MEASURE, iv=iv)


# --- transport keys ------------------------------------------------------------------


def test_from_tiktek_splits_tek_first_then_tik() -> None:
    keys = TransportKeys.from_tiktek(TEK + TIK)
    assert keys.tek == TEK
    assert keys.tik == TIK
    # And those keys reproduce sevctl's header, which only the right order can.
    packet = build_packet(S1_TABLE, keys, MEASURE, iv=IV)
    assert packet.header == S1_HEADER
    swapped = TransportKeys.from_tiktek(TIK + TEK)
    assert build_packet(S1_TABLE, swapped, MEASURE, iv=IV).header != S1_HEADER


@pytest.mark.parametrize("size", [0, 16, 31, 33, 48])
def test_from_tiktek_rejects_bad_length(size: int) -> None:
    with pytest.raises(InputError):
        TransportKeys.from_tiktek(bytes(size))


@pytest.mark.parametrize("field", ["tek", "tik"])
@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_keys_reject_bad_length(field: str, size: int) -> None:
    good = {"tek": TEK, "tik": TIK}
    good[field] = bytes(size)
    with pytest.raises(InputError):
        TransportKeys(tek=good["tek"], tik=good["tik"])


def test_generate_gives_fresh_keys_of_the_right_size() -> None:
    first, second = TransportKeys.generate(), TransportKeys.generate()
    assert len(first.tek) == len(first.tik) == 16
    assert first.tek != first.tik
    assert (first.tek, first.tik) != (second.tek, second.tik)


def _spellings(key: bytes) -> list[str]:
    return [
        key.hex(),
        key.hex().upper(),
        repr(key),
        str(list(key)),
        base64.b64encode(key).decode(),
        key.hex(" "),
    ]


def test_repr_never_shows_key_bytes() -> None:
    keys = sevctl_keys()
    psp = SimulatedSecureElement(keys, PlatformInfo(1, 40, 40, 3))
    texts = [repr(keys), str(keys), f"{keys}", f"{keys!r}", repr([keys]), repr(psp), str(psp)]
    for text in texts:
        for key in (TEK, TIK):
            for spelling in _spellings(key):
                assert spelling not in text, text
    assert repr(keys) == "TransportKeys(<redacted>)"
