"""Reset-vector GUID table: real images, the AmdSev fixture, sev-snp-measure, bad input."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from sevsnpmeasure.ovmf import OVMF

from harness.errors import FirmwareFormatError
from harness.firmware import guids
from harness.firmware.guidtable import (
    FOOTER_GUID_FROM_END,
    parse_guid_table,
    parse_sev_metadata,
    parse_tdx_metadata,
)


def make_tail(entries: list[tuple[uuid.UUID, bytes]], size: int = 512) -> bytes:
    """An image tail whose GUID table holds *entries* (first = lowest address)."""
    body = b"".join(
        data + struct.pack("<H", len(data) + 18) + guid.bytes_le for guid, data in entries
    )
    total = len(body) + 18
    table = body + struct.pack("<H", total) + guids.OVMF_TABLE_FOOTER.bytes_le
    end_pad = FOOTER_GUID_FROM_END - 16
    return b"\0" * (size - len(table) - end_pad) + table + b"\0" * end_pad


def test_debian_ovmf_entries(debian_ovmf: Path) -> None:
    image = debian_ovmf.read_bytes()
    table = parse_guid_table(image)
    assert table is not None
    names = [e.name for e in table]
    assert "SEV-ES reset block" in names and "SEV secret block" in names
    secret = table.secret_block
    assert secret is not None and not secret.present  # stock OVMF: base 0, size 0
    meta = parse_sev_metadata(image, table)
    assert meta is not None and meta.sections
    assert all(s.type_name != "unknown" for s in meta.sections)
    tdx = parse_tdx_metadata(image, table)
    assert tdx is not None and any(s.type_name == "BFV" for s in tdx.sections)


def test_matches_sev_snp_measure(debian_ovmf: Path, tmp_path: Path) -> None:
    """sev-snp-measure's own walk of the same table finds the same entries."""
    for path in (debian_ovmf, Path(__file__).parent.parent / "data" / "amdsev-tail.bin"):
        theirs = OVMF(str(path))
        ours = parse_guid_table(path.read_bytes())
        assert ours is not None
        assert {str(e.guid): e.data for e in ours} == dict(theirs._table)
        if theirs.is_sev_hashes_table_supported():
            block = ours.hash_table_block
            assert block is not None and block.base == theirs.sev_hashes_table_gpa()
        meta = parse_sev_metadata(path.read_bytes(), ours)
        assert meta is not None
        assert [(s.gpa, s.size, s.type) for s in meta.sections] == [
            (i.gpa, i.size, i.section_type().value) for i in theirs.metadata_items()
        ]


def test_amdsev_fixture_has_secret_block(amdsev_tail: bytes) -> None:
    table = parse_guid_table(amdsev_tail)
    assert table is not None
    assert table.secret_block is not None and table.secret_block.present
    assert (table.secret_block.base, table.secret_block.size) == (0x80C000, 0xC00)


def test_unknown_entries_are_kept_raw() -> None:
    odd = uuid.UUID("12345678-1234-5678-9abc-def012345678")
    image = make_tail(
        [(odd, b"\x01\x02\x03"), (guids.SEV_SECRET_BLOCK, struct.pack("<II", 0x810000, 0xC00))]
    )
    table = parse_guid_table(image)
    assert table is not None
    entry = table.get(odd)
    assert entry is not None and entry.name is None and entry.data == b"\x01\x02\x03"
    assert table.secret_block is not None and table.secret_block.base == 0x810000


def test_no_footer_means_no_table() -> None:
    assert parse_guid_table(bytes(4096)) is None
    assert parse_guid_table(b"") is None


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t[:-50] + struct.pack("<H", 0xFFFF) + t[-48:], "does not fit"),
        (lambda t: t[:-50] + struct.pack("<H", 17) + t[-48:], "does not fit"),
    ],
)
def test_bad_footer_length(mutate, message) -> None:  # type: ignore[no-untyped-def]
    image = mutate(make_tail([(guids.SEV_SECRET_BLOCK, bytes(8))], size=64))
    with pytest.raises(FirmwareFormatError, match=message):
        parse_guid_table(image)


def test_entry_shorter_than_trailer() -> None:
    image = bytearray(make_tail([(guids.SEV_SECRET_BLOCK, bytes(8))]))
    # The secret entry's length field sits just below its GUID, below the footer.
    at = len(image) - FOOTER_GUID_FROM_END - 2 - 16 - 2  # footer len, entry GUID, entry len
    struct.pack_into("<H", image, at, 4)
    with pytest.raises(FirmwareFormatError, match="shorter than its own"):
        parse_guid_table(bytes(image))


def test_entry_reaching_before_table() -> None:
    image = bytearray(make_tail([(guids.SEV_SECRET_BLOCK, bytes(8))]))
    at = len(image) - FOOTER_GUID_FROM_END - 2 - 16 - 2  # footer len, entry GUID, entry len
    struct.pack_into("<H", image, at, 200)
    with pytest.raises(FirmwareFormatError, match="before the start"):
        parse_guid_table(bytes(image))


def test_metadata_offset_outside_image() -> None:
    image = make_tail([(guids.SEV_METADATA_OFFSET, struct.pack("<I", 0x100000))])
    table = parse_guid_table(image)
    assert table is not None
    with pytest.raises(FirmwareFormatError, match="outside"):
        parse_sev_metadata(image, table)


def test_metadata_bad_signature() -> None:
    image = make_tail([(guids.SEV_METADATA_OFFSET, struct.pack("<I", 400))])
    table = parse_guid_table(image)
    assert table is not None
    with pytest.raises(FirmwareFormatError, match="ASEV"):
        parse_sev_metadata(image, table)


def test_real_amdsev_2025_tail_matches_sev_snp_measure() -> None:
    path = Path(__file__).parent.parent / "data" / "amdsev-2025.02-tail.bin"
    image = path.read_bytes()
    table = parse_guid_table(image)
    assert table is not None
    assert table.secret_block is not None
    assert (table.secret_block.base, table.secret_block.size) == (0x810000, 0xC00)
    theirs = OVMF(str(path))
    assert {str(e.guid): e.data for e in table} == dict(theirs._table)
    hashes = table.hash_table_block
    assert hashes is not None and hashes.base == theirs.sev_hashes_table_gpa()
    meta = parse_sev_metadata(image, table)
    assert meta is not None
    assert [s.type_name for s in meta.sections].count("SNP_KERNEL_HASHES") == 1
    assert [(s.gpa, s.size, s.type) for s in meta.sections] == [
        (i.gpa, i.size, i.section_type().value) for i in theirs.metadata_items()
    ]
