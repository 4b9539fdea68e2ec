"""Firmware volumes, FFS files and their sections (PI spec vol. 3; edk2 MdePkg
``Include/Pi/PiFirmwareVolume.h``, ``PiFirmwareFile.h``).

Volumes are found by their ``_FVH`` signature and header checksum; nested volumes are
reached through FIRMWARE_VOLUME_IMAGE sections, after LZMA decompression where OVMF
compresses them. Tiano (EFI 1.1) and Brotli compressed sections are listed but not
opened: no maintained Python library decodes them, and OVMF does not use them.
"""

from __future__ import annotations

import enum
import lzma
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from harness.errors import FirmwareFormatError, InputError
from harness.files import read_input
from harness.firmware import guids

#: Nesting limit for encapsulation sections and volumes; OVMF uses three levels.
MAX_DEPTH = 8
#: Ceiling on one decompressed section: OVMF's largest (the DXE FV) is ~12 MiB.
MAX_DECOMPRESSED = 256 * 1024 * 1024

EFI_FVB2_ERASE_POLARITY = 0x00000800
FFS_ATTRIB_LARGE_FILE = 0x01
EFI_GUIDED_SECTION_PROCESSING_REQUIRED = 0x01
FFS_FILESYSTEMS = (guids.EFI_FIRMWARE_FILE_SYSTEM2, guids.EFI_FIRMWARE_FILE_SYSTEM3)


class FileType(enum.IntEnum):
    """``EFI_FV_FILETYPE``."""

    RAW = 0x01
    FREEFORM = 0x02
    SECURITY_CORE = 0x03
    PEI_CORE = 0x04
    DXE_CORE = 0x05
    PEIM = 0x06
    DRIVER = 0x07
    COMBINED_PEIM_DRIVER = 0x08
    APPLICATION = 0x09
    MM = 0x0A
    FIRMWARE_VOLUME_IMAGE = 0x0B
    COMBINED_MM_DXE = 0x0C
    MM_CORE = 0x0D
    MM_STANDALONE = 0x0E
    MM_CORE_STANDALONE = 0x0F
    FFS_PAD = 0xF0


class SectionType(enum.IntEnum):
    """``EFI_SECTION_TYPE``."""

    COMPRESSION = 0x01
    GUID_DEFINED = 0x02
    DISPOSABLE = 0x03
    PE32 = 0x10
    PIC = 0x11
    TE = 0x12
    DXE_DEPEX = 0x13
    VERSION = 0x14
    USER_INTERFACE = 0x15
    COMPATIBILITY16 = 0x16
    FIRMWARE_VOLUME_IMAGE = 0x17
    FREEFORM_SUBTYPE_GUID = 0x18
    RAW = 0x19
    PEI_DEPEX = 0x1B
    MM_DEPEX = 0x1C


#: File types whose body is a list of sections (all but raw, pad and unknown types).
SECTIONED_FILE_TYPES = frozenset(t for t in FileType if t not in (FileType.RAW, FileType.FFS_PAD))


def _enum_name(kind: type[enum.IntEnum], value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return f"unknown({value:#04x})"


def _align(value: int, to: int) -> int:
    return (value + to - 1) & ~(to - 1)


@dataclass(frozen=True)
class Section:
    """One section of an FFS file (``EFI_COMMON_SECTION_HEADER`` / ``..2``).

    Attributes:
        type: EFI_SECTION_TYPE value.
        offset: where the section header starts, relative to its container's bytes.
        data: the section body, after the header (and after a GUID-defined section's
            DataOffset); for encapsulations it is the decompressed content.
        guid: the definition GUID of a GUID-defined or freeform-subtype section.
        children: sections inside an encapsulation section.
        volume: the volume inside a FIRMWARE_VOLUME_IMAGE section.
        note: why an encapsulation could not be opened, if it could not.
    """

    type: int
    offset: int
    data: bytes = field(repr=False)
    guid: UUID | None = None
    children: tuple[Section, ...] = ()
    volume: FirmwareVolume | None = None
    note: str | None = None

    COMMON = struct.Struct("<3sB")
    GUID_DEFINED = struct.Struct("<16sHH")
    COMPRESSION = struct.Struct("<IB")

    @property
    def type_name(self) -> str:
        return _enum_name(SectionType, self.type)

    def walk(self) -> Iterator[Section]:
        """This section and every section inside it (not crossing into volumes)."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class FfsFile:
    """``EFI_FFS_FILE_HEADER`` / ``EFI_FFS_FILE_HEADER2`` and what it holds.

    Attributes:
        offset: header offset relative to the volume start.
        size: whole file size, header included.
    """

    guid: UUID
    type: int
    attributes: int
    offset: int
    size: int
    sections: tuple[Section, ...]

    HEADER = struct.Struct("<16sHBB3sB")
    EXTENDED_SIZE = struct.Struct("<Q")

    @property
    def type_name(self) -> str:
        return _enum_name(FileType, self.type)

    def walk_sections(self) -> Iterator[Section]:
        for section in self.sections:
            yield from section.walk()

    @property
    def ui_name(self) -> str | None:
        """The name from the first USER_INTERFACE section, if any."""
        for section in self.walk_sections():
            if section.type == SectionType.USER_INTERFACE:
                return section.data.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        return None

    def first(self, kind: SectionType) -> Section | None:
        return next((s for s in self.walk_sections() if s.type == kind), None)

    @property
    def volumes(self) -> tuple[FirmwareVolume, ...]:
        return tuple(s.volume for s in self.walk_sections() if s.volume is not None)


@dataclass(frozen=True)
class FirmwareVolume:
    """``EFI_FIRMWARE_VOLUME_HEADER`` and its files.

    Attributes:
        offset: offset of the header in the image, or in the decompressed section that
            holds the volume when it is nested.
        name: ``FvName`` from the extended header, when there is one.
    """

    offset: int
    length: int
    filesystem: UUID
    attributes: int
    header_length: int
    revision: int
    name: UUID | None
    files: tuple[FfsFile, ...]

    HEADER = struct.Struct("<16s16sQ4sIHHHBB")
    SIGNATURE = b"_FVH"
    EXT_HEADER = struct.Struct("<16sI")

    def walk(self) -> Iterator[tuple[FirmwareVolume, FfsFile]]:
        """Every (volume, file) pair in this volume and the volumes nested inside it."""
        for ffs in self.files:
            yield self, ffs
            for inner in ffs.volumes:
                yield from inner.walk()


def _header_checksum_ok(header: bytes) -> bool:
    words = struct.unpack(f"<{len(header) // 2}H", header)
    return bool(sum(words) & 0xFFFF == 0)


def _try_volume_header(data: bytes, at: int) -> tuple[int, int, int] | None:
    """Return (length, header_length, attributes) if a sane header starts at *at*."""
    if at < 0 or at + FirmwareVolume.HEADER.size > len(data):
        return None
    (_, _, length, sig, attrs, hlen, _, _, _, _) = FirmwareVolume.HEADER.unpack_from(data, at)
    if sig != FirmwareVolume.SIGNATURE or hlen < FirmwareVolume.HEADER.size or hlen % 2:
        return None
    if at + hlen > len(data) or length < hlen:
        return None
    if not _header_checksum_ok(data[at : at + hlen]):
        return None
    return length, hlen, attrs


def parse_volume(data: bytes, at: int = 0, depth: int = 0) -> FirmwareVolume:
    """Parse the volume whose header starts at offset *at* of *data*.

    Raises:
        FirmwareFormatError: bad signature or checksum, a volume longer than the data
            (a truncated image), or malformed files or sections inside.
    """
    found = _try_volume_header(data, at)
    if found is None:
        raise FirmwareFormatError(
            f"No valid firmware volume header (signature and checksum) at offset {at:#x}."
        )
    length, hlen, attrs = found
    if at + length > len(data):
        raise FirmwareFormatError(
            f"The firmware volume at offset {at:#x} is {length:#x} bytes long but only "
            f"{len(data) - at:#x} bytes remain: the image is truncated."
        )
    (_, fs_raw, _, _, _, _, _, ext_off, _, rev) = FirmwareVolume.HEADER.unpack_from(data, at)
    fv = data[at : at + length]
    name = None
    files_at = hlen
    if ext_off:
        if ext_off + FirmwareVolume.EXT_HEADER.size > length:
            raise FirmwareFormatError(
                f"The firmware volume at offset {at:#x} has an extended header offset "
                f"{ext_off:#x} outside the volume."
            )
        raw_name, ext_size = FirmwareVolume.EXT_HEADER.unpack_from(fv, ext_off)
        name = guids.from_le(raw_name)
        files_at = max(files_at, ext_off + ext_size)
    erased = 0xFF if attrs & EFI_FVB2_ERASE_POLARITY else 0x00
    filesystem = guids.from_le(fs_raw)
    files: tuple[FfsFile, ...] = ()
    # Only FFS volumes hold files; the variable store volume holds a variable store.
    if filesystem in FFS_FILESYSTEMS:
        files = tuple(_parse_files(fv, _align(files_at, 8), erased, depth, at))
    return FirmwareVolume(
        offset=at,
        length=length,
        filesystem=filesystem,
        attributes=attrs,
        header_length=hlen,
        revision=rev,
        name=name,
        files=files,
    )


def _parse_files(fv: bytes, pos: int, erased: int, depth: int, base: int) -> Iterator[FfsFile]:
    header_size = FfsFile.HEADER.size
    while pos + header_size <= len(fv):
        head = fv[pos : pos + header_size]
        if head == bytes([erased]) * header_size:
            return  # free space: the rest of the volume is unused
        raw_guid, _, ftype, fattrs, raw_size, _ = FfsFile.HEADER.unpack_from(fv, pos)
        size = int.from_bytes(raw_size, "little")
        hsize = header_size
        if fattrs & FFS_ATTRIB_LARGE_FILE:
            if pos + header_size + 8 > len(fv):
                break
            size = FfsFile.EXTENDED_SIZE.unpack_from(fv, pos + header_size)[0]
            hsize += 8
        guid = guids.from_le(raw_guid)
        where = f"file {guid} at offset {base + pos:#x}"
        if size < hsize or pos + size > len(fv):
            raise FirmwareFormatError(
                f"The FFS {where} has size {size:#x}, which does not fit its volume."
            )
        body = fv[pos + hsize : pos + size]
        sections: tuple[Section, ...] = ()
        if ftype in SECTIONED_FILE_TYPES:
            sections = tuple(_parse_sections(body, depth, where))
        yield FfsFile(guid, ftype, fattrs, pos, size, sections)
        pos = _align(pos + size, 8)


def _parse_sections(body: bytes, depth: int, where: str) -> Iterator[Section]:
    if depth > MAX_DEPTH:
        raise FirmwareFormatError(f"Sections in {where} nest more than {MAX_DEPTH} deep.")
    pos = 0
    while pos + Section.COMMON.size <= len(body):
        raw_size, stype = Section.COMMON.unpack_from(body, pos)
        size = int.from_bytes(raw_size, "little")
        hsize = Section.COMMON.size
        if size == 0xFFFFFF:
            if pos + 8 > len(body):
                raise FirmwareFormatError(f"A section header in {where} is cut short.")
            size = struct.unpack_from("<I", body, pos + 4)[0]
            hsize = 8
        if size < hsize or pos + size > len(body):
            raise FirmwareFormatError(
                f"A section at offset {pos:#x} of {where} has size {size:#x}, which does not "
                "fit the file."
            )
        yield _section(body[pos : pos + size], stype, hsize, pos, depth, where)
        pos = _align(pos + size, 4)


def _section(raw: bytes, stype: int, hsize: int, pos: int, depth: int, where: str) -> Section:
    body = raw[hsize:]
    if stype == SectionType.COMPRESSION:
        if len(body) < Section.COMPRESSION.size:
            raise FirmwareFormatError(f"A compression section in {where} is cut short.")
        _, ctype = Section.COMPRESSION.unpack_from(body)
        inner = body[Section.COMPRESSION.size :]
        if ctype != 0:
            return Section(stype, pos, inner, note="EFI standard compression: not opened")
        return Section(stype, pos, inner, children=tuple(_parse_sections(inner, depth + 1, where)))
    if stype == SectionType.GUID_DEFINED:
        return _guid_defined(raw, hsize, pos, depth, where)
    if stype == SectionType.DISPOSABLE:
        return Section(stype, pos, body, children=tuple(_parse_sections(body, depth + 1, where)))
    if stype == SectionType.FIRMWARE_VOLUME_IMAGE:
        if depth > MAX_DEPTH:
            raise FirmwareFormatError(f"Volumes in {where} nest more than {MAX_DEPTH} deep.")
        return Section(stype, pos, body, volume=parse_volume(body, 0, depth + 1))
    if stype == SectionType.FREEFORM_SUBTYPE_GUID and len(body) >= 16:
        return Section(stype, pos, body[16:], guid=guids.from_le(body[:16]))
    return Section(stype, pos, body)


def _guid_defined(raw: bytes, hsize: int, pos: int, depth: int, where: str) -> Section:
    if len(raw) < hsize + Section.GUID_DEFINED.size:
        raise FirmwareFormatError(f"A GUID-defined section in {where} is cut short.")
    raw_guid, data_offset, attrs = Section.GUID_DEFINED.unpack_from(raw, hsize)
    guid = guids.from_le(raw_guid)
    if data_offset < hsize + Section.GUID_DEFINED.size or data_offset > len(raw):
        raise FirmwareFormatError(
            f"A GUID-defined section in {where} has data offset {data_offset:#x} outside it."
        )
    payload = raw[data_offset:]
    stype = SectionType.GUID_DEFINED
    if guid == guids.CRC32_GUIDED_SECTION or not attrs & EFI_GUIDED_SECTION_PROCESSING_REQUIRED:
        if guid == guids.CRC32_GUIDED_SECTION:
            expected = struct.unpack_from("<I", raw, hsize + Section.GUID_DEFINED.size)[0]
            if zlib.crc32(payload) != expected:
                raise FirmwareFormatError(f"A CRC32 guided section in {where} fails its CRC.")
        children = tuple(_parse_sections(payload, depth + 1, where))
        return Section(stype, pos, payload, guid=guid, children=children)
    if guid in (guids.LZMA_CUSTOM_DECOMPRESS, guids.LZMAF86_CUSTOM_DECOMPRESS):
        plain = lzma_decompress(payload, x86=guid == guids.LZMAF86_CUSTOM_DECOMPRESS, where=where)
        children = tuple(_parse_sections(plain, depth + 1, where))
        return Section(stype, pos, plain, guid=guid, children=children)
    label = guids.name_of(guid) or f"GUID {guid}"
    return Section(stype, pos, payload, guid=guid, note=f"{label}: not opened")


#: edk2's LZMA header: 5 property bytes then the UINT64 uncompressed size
#: (``MdeModulePkg/Library/LzmaCustomDecompressLib``; the classic .lzma header).
LZMA_HEADER = struct.Struct("<B I Q")


def lzma_decompress(data: bytes, *, x86: bool, where: str) -> bytes:
    """Decompress an edk2 LZMA (optionally with the x86 BCJ filter) section payload.

    Raises:
        FirmwareFormatError: a bad header, a size beyond MAX_DECOMPRESSED, corrupt or
            short data.
    """
    if len(data) < LZMA_HEADER.size:
        raise FirmwareFormatError(f"The LZMA data in {where} is shorter than its header.")
    props, dict_size, out_size = LZMA_HEADER.unpack_from(data)
    if props >= 9 * 5 * 5:
        raise FirmwareFormatError(f"The LZMA data in {where} has invalid properties.")
    if out_size > MAX_DECOMPRESSED:
        raise FirmwareFormatError(
            f"The LZMA data in {where} claims {out_size} bytes uncompressed, more than the "
            f"{MAX_DECOMPRESSED}-byte limit."
        )
    lc, rest = props % 9, props // 9
    lp, pb = rest % 5, rest // 5
    filters: list[dict[str, int]] = [
        {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": max(dict_size, 4096)}
    ]
    if x86:
        filters.insert(0, {"id": lzma.FILTER_X86})
    try:
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
        plain = decoder.decompress(data[LZMA_HEADER.size :], max_length=out_size)
    except lzma.LZMAError as err:
        raise FirmwareFormatError(f"The LZMA data in {where} is corrupt ({err}).") from err
    if len(plain) != out_size:
        raise FirmwareFormatError(
            f"The LZMA data in {where} decompressed to {len(plain)} bytes, not the {out_size} "
            "its header promises."
        )
    return plain


def find_volumes(image: bytes) -> list[FirmwareVolume]:
    """Find and parse every top-level firmware volume in a flash image.

    A volume is recognised by its ``_FVH`` signature and a valid header checksum; the
    scan continues after each volume, so volumes inside a parsed volume are reached
    through its sections instead.

    Raises:
        FirmwareFormatError: a recognised volume is malformed or runs past the image.
    """
    volumes: list[FirmwareVolume] = []
    sig_at = 40  # Signature follows ZeroVector, FileSystemGuid and FvLength.
    pos = 0
    while True:
        hit = image.find(FirmwareVolume.SIGNATURE, pos + sig_at)
        if hit < 0:
            return volumes
        start = hit - sig_at
        if _try_volume_header(image, start) is None:
            pos = start + 1
            continue
        fv = parse_volume(image, start)
        volumes.append(fv)
        pos = start + fv.length


def read_firmware(path: Path) -> bytes:
    """Read a firmware file.

    Raises:
        InputError: missing, unreadable, a directory, or empty.
    """
    data = read_input(path, "firmware")
    if not data:
        raise InputError(f"The firmware file {path} is empty.")
    return data
