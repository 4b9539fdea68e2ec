"""Firmware volumes: Debian's OVMF against uefi_firmware, synthetic volumes, bad input."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import uefi_firmware

from harness.errors import FirmwareFormatError
from harness.firmware import guids
from harness.firmware.fv import FileType, SectionType, find_volumes, lzma_decompress, parse_volume
from tests import fvbuild

APP = uuid.UUID("0e5d3c1a-8f0b-4c55-9a4e-2d8f1c3b7a66")


def _their_files(image: bytes) -> set[str]:
    """FFS file GUIDs (pads excluded) as uefi_firmware finds them, nested volumes included."""
    found: set[str] = set()

    def walk(obj: object) -> None:
        if type(obj).__name__ == "FirmwareFile" and getattr(obj, "type", None) != 0xF0:
            found.add(str(obj.guid_label))  # type: ignore[attr-defined]
        for child in getattr(obj, "objects", None) or []:
            walk(child)

    walk(uefi_firmware.AutoParser(image).parse())
    return found


def _our_files(image: bytes) -> set[str]:
    return {
        str(ffs.guid)
        for top in find_volumes(image)
        for _, ffs in top.walk()
        if ffs.type != FileType.FFS_PAD
    }


def test_debian_ovmf_matches_uefi_firmware(debian_ovmf: Path) -> None:
    image = debian_ovmf.read_bytes()
    ours, theirs = _our_files(image), _their_files(image)
    assert len(ours) > 100  # PEI and DXE volumes were decompressed
    assert ours == theirs


def test_debian_ovmf_names_and_nesting(debian_ovmf: Path) -> None:
    volumes = find_volumes(debian_ovmf.read_bytes())
    assert volumes[0].filesystem == guids.EFI_SYSTEM_NV_DATA_FV
    names = {ffs.ui_name for top in volumes for _, ffs in top.walk()}
    assert {"PeiCore", "DxeCore", "BdsDxe", "PlatformPei"} <= names
    main = next(v for v in volumes if any(f.volumes for f in v.files))
    nested = [inner for f in main.files for inner in f.volumes]
    assert len(nested) == 2  # PEIFV and DXEFV inside the LZMA section


def test_synthetic_volume_round_trip() -> None:
    pe_body = b"MZ" + bytes(200)
    sections = fvbuild.sections_of(fvbuild.section(0x10, pe_body), fvbuild.ui_section("Demo"))
    image = fvbuild.volume(fvbuild.ffs_file(APP, 0x09, sections))
    fv = parse_volume(image)
    (ffs,) = fv.files
    assert ffs.guid == APP and ffs.type_name == "APPLICATION" and ffs.ui_name == "Demo"
    pe = ffs.first(SectionType.PE32)
    assert pe is not None and pe.data == pe_body
    assert str(APP) in _their_files(image)


def test_lzma_nested_volume() -> None:
    inner = fvbuild.volume(fvbuild.ffs_file(APP, 0x09, fvbuild.section(0x10, b"MZ" + bytes(64))))
    outer_file = fvbuild.ffs_file(
        uuid.uuid4(), 0x0B, fvbuild.lzma_section(fvbuild.section(0x17, inner))
    )
    fv = parse_volume(fvbuild.volume(outer_file))
    (ffs,) = fv.files
    (nested,) = ffs.volumes
    assert [f.guid for f in nested.files] == [APP]


def test_truncated_volume_is_named() -> None:
    image = fvbuild.volume(fvbuild.ffs_file(APP, 0x09, fvbuild.section(0x19, bytes(100))))
    with pytest.raises(FirmwareFormatError, match="truncated"):
        find_volumes(image[: len(image) // 2])


def test_file_larger_than_volume() -> None:
    image = bytearray(
        fvbuild.volume(fvbuild.ffs_file(APP, 0x09, fvbuild.section(0x19, bytes(100))))
    )
    image[72 + 20 : 72 + 23] = (0xFFFFF0).to_bytes(3, "little")
    with pytest.raises(FirmwareFormatError, match="does not fit its volume"):
        parse_volume(bytes(image))


def test_zero_size_section() -> None:
    body = bytes(4) + bytes(60)  # a section header claiming size 0
    image = fvbuild.volume(fvbuild.ffs_file(APP, 0x07, body))
    with pytest.raises(FirmwareFormatError, match="section"):
        parse_volume(image)


def test_corrupt_lzma() -> None:
    good = fvbuild.lzma_section(fvbuild.section(0x19, bytes(5000)))
    bad = good[:40] + bytes(len(good) - 40)
    with pytest.raises(FirmwareFormatError, match="LZMA"):
        parse_volume(fvbuild.volume(fvbuild.ffs_file(APP, 0x07, bad)))


def test_lzma_bomb_refused() -> None:
    header = bytes([0x5D]) + (1 << 20).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little")
    with pytest.raises(FirmwareFormatError, match="limit"):
        lzma_decompress(header + bytes(32), x86=False, where="test")


def test_unopened_encapsulation_is_noted() -> None:
    header = guids.TIANO_CUSTOM_DECOMPRESS.bytes_le + (24).to_bytes(2, "little") + b"\x01\x00"
    body = fvbuild.section(0x02, header + bytes(32))
    fv = parse_volume(fvbuild.volume(fvbuild.ffs_file(APP, 0x07, body)))
    (ffs,) = fv.files
    notes = [s.note for s in ffs.walk_sections() if s.note]
    assert notes == ["Tiano compressed: not opened"]


def test_no_volume_in_random_bytes() -> None:
    assert find_volumes(bytes(range(256)) * 64) == []
