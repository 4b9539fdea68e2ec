"""The EFI secret table that lives in OVMF's secret page.

Layout (sevctl ``src/secret.rs``, Linux ``drivers/virt/coco/efi_secret/efi_secret.c``)::

    struct secret_header { GUID guid; /* EFI_SECRET_TABLE_HEADER */ UINT32 len; };
    struct secret_entry  { GUID guid; UINT32 len; /* incl. this header */ UINT8 data[]; };

``header.len`` covers the header and the entries but not the padding that makes the
table a multiple of 16 bytes for LAUNCH_SECRET. A consumer that removes an entry zeroes
its GUID and data and keeps its length, so the kernel can still walk the table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from uuid import UUID

from harness.errors import SecretFormatError
from harness.firmware import guids

SECRET_HEADER = struct.Struct("<16sI")
SECRET_ENTRY = struct.Struct("<16sI")
NULL_GUID = UUID(int=0)
#: Linux's efi_secret exposes at most this many entries and ignores the rest.
LINUX_MAX_ENTRIES = 64
#: The secret block of every AmdSev build so far (edk2 2022.11 to 2025.02).
DEFAULT_SECRET_AREA = 0xC00


@dataclass(frozen=True)
class SecretEntry:
    """One entry. ``length`` is the on-disk len field (header + data)."""

    guid: UUID
    data: bytes

    @property
    def length(self) -> int:
        return SECRET_ENTRY.size + len(self.data)

    @property
    def deleted(self) -> bool:
        """Linux skips entries whose GUID is all zero: they were consumed."""
        return self.guid == NULL_GUID


def disk_passphrase_entry(passphrase: bytes) -> SecretEntry:
    """The disk passphrase entry: the passphrase followed by one NUL.

    The NUL keeps tables usable by the older GRUB efisecret patches, which required it;
    our GRUB provider drops one trailing NUL.
    """
    if not passphrase:
        raise SecretFormatError("The disk passphrase is empty.")
    if b"\0" in passphrase:
        raise SecretFormatError("The disk passphrase contains a NUL byte.")
    return SecretEntry(guids.DISK_PASSPHRASE_ENTRY, passphrase + b"\0")


@dataclass(frozen=True)
class SecretTable:
    """The table's entries, in order; deleted (zero-GUID) entries are kept."""

    entries: tuple[SecretEntry, ...]

    @property
    def length(self) -> int:
        """The header's len field: header plus entries, no padding."""
        return SECRET_HEADER.size + sum(e.length for e in self.entries)

    def serialize(self, area_size: int | None = None) -> bytes:
        """The table zero-padded to a multiple of 16 bytes.

        Args:
            area_size: the secret block size; refuse a table that does not fit.

        Raises:
            SecretFormatError: duplicate GUIDs, or the table does not fit *area_size*.
        """
        live = [e.guid for e in self.entries if not e.deleted]
        if len(set(live)) != len(live):
            raise SecretFormatError("The secret table has two entries with the same GUID.")
        if len(live) > LINUX_MAX_ENTRIES:
            raise SecretFormatError(
                f"The secret table has {len(live)} entries; Linux reads only the first "
                f"{LINUX_MAX_ENTRIES}."
            )
        out = bytearray(SECRET_HEADER.pack(guids.EFI_SECRET_TABLE_HEADER.bytes_le, self.length))
        for e in self.entries:
            out += SECRET_ENTRY.pack(e.guid.bytes_le, e.length) + e.data
        out += bytes(-len(out) % 16)
        if area_size is not None and len(out) > area_size:
            raise SecretFormatError(
                f"The secret table is {len(out)} bytes padded, more than the firmware's "
                f"{area_size}-byte secret block."
            )
        return bytes(out)

    def get(self, guid: UUID) -> SecretEntry | None:
        return next((e for e in self.entries if e.guid == guid), None)

    @property
    def live(self) -> tuple[SecretEntry, ...]:
        return tuple(e for e in self.entries if not e.deleted)

    @classmethod
    def parse(cls, area: bytes) -> SecretTable:
        """Parse a secret area with the rules of Linux's efi_secret driver.

        Raises:
            SecretFormatError: no table header, a header length outside the area, an
                entry whose length is below 20 or past the table (Linux then rejects the
                whole area as corrupted), or two live entries with the same GUID (Linux
                cannot create the second securityfs file and gives up on the area).
        """
        if len(area) < SECRET_HEADER.size:
            raise SecretFormatError("The secret area is smaller than a table header.")
        raw_guid, length = SECRET_HEADER.unpack_from(area)
        if guids.from_le(raw_guid) != guids.EFI_SECRET_TABLE_HEADER:
            raise SecretFormatError("The secret area does not start with a secret table header.")
        if length < SECRET_HEADER.size:
            raise SecretFormatError(f"The secret table length {length} is too small.")
        if length > len(area):
            raise SecretFormatError(
                f"The secret table length {length} is larger than the {len(area)}-byte area."
            )
        entries: list[SecretEntry] = []
        pos, left = SECRET_HEADER.size, length - SECRET_HEADER.size
        live = 0  # Linux counts only entries it exposes towards its limit
        while left >= SECRET_ENTRY.size and live < LINUX_MAX_ENTRIES:
            raw_guid, elen = SECRET_ENTRY.unpack_from(area, pos)
            if elen < SECRET_ENTRY.size or elen > left:
                raise SecretFormatError(
                    f"The secret entry at offset {pos:#x} has length {elen}; the area is corrupted."
                )
            entry = SecretEntry(guids.from_le(raw_guid), area[pos + SECRET_ENTRY.size : pos + elen])
            if not entry.deleted and any(e.guid == entry.guid for e in entries):
                raise SecretFormatError(
                    f"The secret table has two entries with GUID {entry.guid}; the area is "
                    "unusable."
                )
            entries.append(entry)
            live += not entry.deleted
            pos += elen
            left -= elen
        return cls(tuple(entries))
