"""The OVMF reset-vector GUID table and the metadata it points to.

Layout (edk2 ``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm``, QEMU
``hw/i386/pc_sysfw_ovmf.c``): the table ends 0x20 bytes before the end of the image
with a footer entry whose GUID is :data:`guids.OVMF_TABLE_FOOTER`. Every entry,
footer included, is laid out as::

    UINT8  Data[Length - 18];
    UINT16 Length;            // data + 18
    GUID   Guid;

so the table is walked backwards from the footer. The footer's Length covers the whole
table. Addresses differ between edk2 releases: always walk, never assume.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID

from harness.errors import FirmwareFormatError
from harness.firmware import guids

#: Offset of the footer GUID from the end of the image (0xffffffd0 when mapped at 4 GiB).
FOOTER_GUID_FROM_END = 0x30
#: The ``UINT16 Length; GUID Guid;`` trailer that ends every entry.
ENTRY_TRAILER = struct.Struct("<H16s")


@dataclass(frozen=True)
class GuidTableEntry:
    """One entry of the reset-vector GUID table.

    Attributes:
        guid: the entry's GUID.
        data: the entry's data bytes (without the length and GUID trailer).
        offset: file offset of ``data`` in the image.
    """

    guid: UUID
    data: bytes
    offset: int

    @property
    def name(self) -> str | None:
        return guids.name_of(self.guid)


@dataclass(frozen=True)
class MemoryBlock:
    """A ``{UINT32 Base; UINT32 Size;}`` entry such as the SEV secret block."""

    base: int
    size: int

    FORMAT = struct.Struct("<II")

    @classmethod
    def parse(cls, data: bytes, what: str) -> MemoryBlock:
        if len(data) < cls.FORMAT.size:
            raise FirmwareFormatError(
                f"The {what} entry holds {len(data)} bytes; it needs {cls.FORMAT.size}."
            )
        base, size = cls.FORMAT.unpack_from(data)
        return cls(base, size)

    @property
    def present(self) -> bool:
        """True when the firmware really reserves the block (stock OVMF has 0/0).

        QEMU and sev-snp-measure treat a zero base as "no block" whatever the size.
        """
        return self.base != 0 and self.size > 0


class SevSectionType(enum.IntEnum):
    """``SEV_SECTION_TYPE`` in OvmfPkg's ``Include/WorkArea.h`` / sev-snp-measure."""

    SNP_SEC_MEM = 1
    SNP_SECRETS = 2
    CPUID = 3
    SVSM_CAA = 4
    SNP_KERNEL_HASHES = 0x10


@dataclass(frozen=True)
class SevMetadataSection:
    """``SEV_METADATA_SECTION_DESC { UINT32 DataBase; UINT32 DataSize; UINT32 Type; }``."""

    gpa: int
    size: int
    type: int

    FORMAT = struct.Struct("<III")

    @property
    def type_name(self) -> str:
        try:
            return SevSectionType(self.type).name
        except ValueError:
            return f"unknown({self.type:#x})"


@dataclass(frozen=True)
class SevMetadata:
    """``OVMF_SEV_METADATA { UINT32 Signature 'ASEV'; UINT32 Len; UINT32 Version;
    UINT32 NumItems; SEV_METADATA_SECTION_DESC Items[]; }``.

    Attributes:
        offset: file offset of the header.
    """

    offset: int
    version: int
    sections: tuple[SevMetadataSection, ...]

    SIGNATURE = b"ASEV"


class TdxSectionType(enum.IntEnum):
    """``TDX_METADATA_SECTION_TYPE`` (OvmfPkg ``Include/IndustryStandard/IntelTdx.h``)."""

    BFV = 0
    CFV = 1
    TD_HOB = 2
    TEMP_MEM = 3
    PERM_MEM = 4
    PAYLOAD = 5
    PAYLOAD_PARAM = 6
    TD_INFO = 7
    TD_PARAMS = 8


@dataclass(frozen=True)
class TdxMetadataSection:
    """``TDVF_SECTION { UINT32 DataOffset; UINT32 RawDataSize; UINT64 MemoryAddress;
    UINT64 MemoryDataSize; UINT32 Type; UINT32 Attributes; }``."""

    data_offset: int
    raw_size: int
    gpa: int
    size: int
    type: int
    attributes: int

    FORMAT = struct.Struct("<IIQQII")

    @property
    def type_name(self) -> str:
        try:
            return TdxSectionType(self.type).name
        except ValueError:
            return f"unknown({self.type:#x})"


@dataclass(frozen=True)
class TdxMetadata:
    """``TDVF_DESCRIPTOR { UINT32 Signature 'TDVF'; UINT32 Length; UINT32 Version;
    UINT32 NumberOfSectionEntry; TDVF_SECTION Sections[]; }``."""

    offset: int
    version: int
    sections: tuple[TdxMetadataSection, ...]

    SIGNATURE = b"TDVF"


@dataclass(frozen=True)
class GuidTable:
    """The parsed table, entries in the order they appear walking back from the footer.

    Attributes:
        offset: file offset where the table's first (lowest) byte lies.
        length: the footer's whole-table length.
    """

    offset: int
    length: int
    entries: tuple[GuidTableEntry, ...]

    def __iter__(self) -> Iterator[GuidTableEntry]:
        return iter(self.entries)

    def get(self, guid: UUID) -> GuidTableEntry | None:
        """The first entry with *guid*, or None."""
        return next((e for e in self.entries if e.guid == guid), None)

    def block(self, guid: UUID) -> MemoryBlock | None:
        """Decode a ``{base, size}`` entry such as the secret or hash-table block."""
        entry = self.get(guid)
        return None if entry is None else MemoryBlock.parse(entry.data, guids.NAMES[guid])

    @property
    def secret_block(self) -> MemoryBlock | None:
        return self.block(guids.SEV_SECRET_BLOCK)

    @property
    def hash_table_block(self) -> MemoryBlock | None:
        return self.block(guids.SEV_HASH_TABLE_BLOCK)

    @property
    def sev_es_reset_eip(self) -> int | None:
        """Where SEV-ES/SNP application processors start: ``UINT32`` with the IP in
        bits 0-15 and the CS base in bits 16-31 (the SEV-ES reset block)."""
        return self.u32(guids.SEV_ES_RESET_BLOCK)

    def u32(self, guid: UUID) -> int | None:
        """Decode an entry whose data is one UINT32 (offsets, the SEV-ES reset block)."""
        entry = self.get(guid)
        if entry is None:
            return None
        if len(entry.data) < 4:
            raise FirmwareFormatError(
                f"The {guids.NAMES[guid]} entry holds {len(entry.data)} bytes; it needs 4."
            )
        return int(struct.unpack_from("<I", entry.data)[0])


def parse_guid_table(image: bytes) -> GuidTable | None:
    """Walk the reset-vector GUID table of *image*.

    Returns:
        The table, or None when the image has no footer GUID (not an OVMF with a table).

    Raises:
        FirmwareFormatError: the footer is there but the table is malformed (lengths out
            of range, entries shorter than their trailer, a walk that does not end
            exactly at the table start).
    """
    size = len(image)
    if size < FOOTER_GUID_FROM_END + ENTRY_TRAILER.size:
        return None
    footer_guid_at = size - FOOTER_GUID_FROM_END
    footer_end = footer_guid_at + 16
    if guids.from_le(image[footer_guid_at:footer_end]) != guids.OVMF_TABLE_FOOTER:
        return None
    total = struct.unpack_from("<H", image, footer_guid_at - 2)[0]
    start = footer_end - total
    if total < ENTRY_TRAILER.size or start < 0:
        raise FirmwareFormatError(
            f"The GUID table footer gives a table length of {total} bytes, which does not "
            f"fit in the {size}-byte image."
        )
    entries: list[GuidTableEntry] = []
    # The footer's own trailer is not an entry: walk from just below it.
    pos = footer_end - ENTRY_TRAILER.size
    while pos > start:
        if pos - start < ENTRY_TRAILER.size:
            raise FirmwareFormatError(
                f"The GUID table has {pos - start} stray bytes at offset {start:#x}, too few "
                "for an entry."
            )
        length, raw_guid = ENTRY_TRAILER.unpack_from(image, pos - ENTRY_TRAILER.size)
        guid = guids.from_le(raw_guid)
        if length < ENTRY_TRAILER.size:
            raise FirmwareFormatError(
                f"GUID table entry {guid} at offset {pos - ENTRY_TRAILER.size:#x} has length "
                f"{length}, shorter than its own 18-byte trailer."
            )
        if length > pos - start:
            raise FirmwareFormatError(
                f"GUID table entry {guid} at offset {pos - ENTRY_TRAILER.size:#x} has length "
                f"{length}, which reaches before the start of the table."
            )
        data_at = pos - length
        entries.append(GuidTableEntry(guid, bytes(image[data_at : pos - 18]), data_at))
        pos = data_at
    return GuidTable(offset=start, length=total, entries=tuple(entries))


#: Both metadata blocks start ``UINT32 Signature; UINT32 Length; UINT32 Version;
#: UINT32 NumberOfSections;`` and are located by an offset from the end of the image.
METADATA_HEADER = struct.Struct("<4sIII")


def _metadata_sections(
    image: bytes, offset_from_end: int, what: str, signature: bytes, section: struct.Struct
) -> tuple[int, int, list[tuple[int, ...]]]:
    """Locate a metadata block, check it, and unpack its sections.

    Returns:
        (file offset, version, unpacked section tuples)
    """
    at = len(image) - offset_from_end
    if offset_from_end <= 0 or at < 0 or at + METADATA_HEADER.size > len(image):
        raise FirmwareFormatError(
            f"The {what} offset {offset_from_end:#x} points outside the {len(image)}-byte image."
        )
    sig, length, version, count = METADATA_HEADER.unpack_from(image, at)
    if sig != signature:
        raise FirmwareFormatError(
            f"The {what} at offset {at:#x} has signature {sig!r}, not {signature!r}."
        )
    body = METADATA_HEADER.size + count * section.size
    if body > length or at + body > len(image):
        raise FirmwareFormatError(
            f"The {what} at offset {at:#x} lists {count} sections, more than its "
            f"{length}-byte length holds."
        )
    first = at + METADATA_HEADER.size
    return (
        at,
        version,
        [section.unpack_from(image, pos) for pos in range(first, at + body, section.size)],
    )


def parse_sev_metadata(image: bytes, table: GuidTable) -> SevMetadata | None:
    """Decode the ``ASEV`` metadata the SEV metadata offset entry points to.

    Returns:
        None when the table has no such entry.

    Raises:
        FirmwareFormatError: bad offset, signature or section count.
    """
    offset = table.u32(guids.SEV_METADATA_OFFSET)
    if offset is None:
        return None
    at, version, raw = _metadata_sections(
        image, offset, "SEV metadata", SevMetadata.SIGNATURE, SevMetadataSection.FORMAT
    )
    return SevMetadata(at, version, tuple(SevMetadataSection(*r) for r in raw))


def parse_tdx_metadata(image: bytes, table: GuidTable) -> TdxMetadata | None:
    """Decode the ``TDVF`` descriptor the TDX metadata offset entry points to.

    Returns:
        None when the table has no such entry.

    Raises:
        FirmwareFormatError: bad offset, signature or section count.
    """
    offset = table.u32(guids.TDX_METADATA_OFFSET)
    if offset is None:
        return None
    at, version, raw = _metadata_sections(
        image, offset, "TDX metadata", TdxMetadata.SIGNATURE, TdxMetadataSection.FORMAT
    )
    return TdxMetadata(at, version, tuple(TdxMetadataSection(*r) for r in raw))
