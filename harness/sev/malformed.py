"""Secret pages a hostile host could plant: malformed EFI secret tables.

Each page is built byte by byte with :mod:`struct` (``SecretTable.serialize`` refuses
all of them) and is exactly one secret block long. Where a layout has room for it, the
page carries the disk passphrase the caller gives, so a GRUB that wrongly accepts a
table unlocks the disk without a prompt and the boot scenario sees it; every page must
end in GRUB's fallback prompt.

Linux's efi_secret (``drivers/virt/coco/efi_secret/efi_secret.c``) rejects the whole
area for a wrong header GUID, a header len below 20 or past the area, an entry len
below 20 or past the table, and two live entries with the same GUID (securityfs cannot
create the second file). It accepts the pages named in :data:`LINUX_ACCEPTS`, which
GRUB must still refuse to unlock with.
"""

from __future__ import annotations

import random
import struct
from uuid import UUID

from harness.firmware import guids
from harness.sev.secret import DEFAULT_SECRET_AREA, NULL_GUID

#: ``{GUID; UINT32 len}``: the table header and every entry header alike.
HEADER = struct.Struct("<16sI")
#: The other secret a good table would carry beside the passphrase.
OTHER_GUID = UUID("5f3e2f0a-4c1d-4b6e-9a57-2d8c6b1e0f34")
#: Seed of the "random-bytes" page: the same garbage every run.
RANDOM_SEED = 0x5EC12E7

#: Pages Linux would accept, and why GRUB must still not unlock with them.
LINUX_ACCEPTS: dict[str, str] = {
    "zero-length-passphrase": "the passphrase entry has no data",
    "nul-only-passphrase": "the passphrase is a single NUL, empty once it is dropped",
    "null-guid-entry-only": "the only entry is deleted (zero GUID)",
    "truncated-mid-entry": "the table ends inside the passphrase entry's header",
    "too-many-secrets": "Linux exposes the first 64 live entries and ignores the rest, "
    "the passphrase behind them among them",
}
#: Pages whose planted passphrase lies where GRUB must not write: GRUB writes only into
#: a table whose header it checked, and only within its length. Everywhere else GRUB
#: must leave no passphrase behind (a refused table is wiped whole).
PASSPHRASE_OUT_OF_REACH: dict[str, str] = {
    "wrong-header-guid": "no table header: the page is not a secret table",
    "header-len-past-area": "the header's length is out of bounds: no table to write to",
    "header-len-too-small": "the header's length is out of bounds: no table to write to",
    "null-guid-entry-only": "the bytes are a deleted entry's data, not a passphrase entry",
    "truncated-mid-entry": "the table ends before the passphrase entry",
}
#: How many live entries Linux's efi_secret exposes (EFI_SECRET_NUM_FILES).
LINUX_MAX_SECRETS = 64


def _header(guid: UUID, length: int) -> bytes:
    return HEADER.pack(guid.bytes_le, length)


def _entry(guid: UUID, data: bytes, length: int | None = None) -> bytes:
    """An entry whose len field is *length* (default: the true one)."""
    return _header(guid, HEADER.size + len(data) if length is None else length) + data


def _many(count: int) -> bytes:
    """*count* one-byte secrets, each under its own GUID."""
    return b"".join(
        _entry(UUID(int=OTHER_GUID.int ^ (n + 1)), bytes([n & 0xFF])) for n in range(count)
    )


def _page(body: bytes, size: int) -> bytes:
    """*body* zero-padded to one secret block (cut if it is longer)."""
    return body[:size] + bytes(max(0, size - len(body)))


def _table(entries: bytes, size: int, length: int | None = None) -> bytes:
    """A table header whose len is *length* (default: the true one), then *entries*."""
    true_length = HEADER.size + len(entries)
    table_guid = guids.EFI_SECRET_TABLE_HEADER
    return _page(_header(table_guid, true_length if length is None else length) + entries, size)


def has_table_header(page: bytes) -> bool:
    """Whether *page* starts as the owner's table would: the table header GUID and a
    length that fits the page, whatever the entries behind it hold. GRUB then treats
    the page as the owner's table, which never leads to a prompt."""
    if len(page) < HEADER.size:
        return False
    raw_guid, length = HEADER.unpack_from(page)
    return UUID(bytes_le=raw_guid) == guids.EFI_SECRET_TABLE_HEADER and (
        HEADER.size <= length <= len(page)
    )


def malformed_tables(
    passphrase: bytes, size: int = DEFAULT_SECRET_AREA
) -> tuple[tuple[str, bytes], ...]:
    """Named secret pages of *size* bytes, each malformed in one way.

    Args:
        passphrase: the real disk passphrase, planted where the layout has room.
        size: the firmware's secret block (OVMF's is 0xC00).
    """
    disk = guids.DISK_PASSPHRASE_ENTRY
    secret = passphrase + b"\0"  # as the owner writes it
    other = _entry(OTHER_GUID, b"other secret")
    good = other + _entry(disk, secret)
    wrong_guid = bytearray(_table(good, size))
    wrong_guid[0] ^= 0x01
    after_other = HEADER.size + len(other)  # where the passphrase entry starts
    pages = [
        ("wrong-header-guid", bytes(wrong_guid)),
        ("header-len-past-area", _table(good, size, length=size + 1)),
        ("header-len-too-small", _table(good, size, length=HEADER.size - 1)),
        ("entry-len-too-small", _table(other + _entry(disk, secret, HEADER.size - 1), size)),
        ("entry-len-zero", _table(other + _entry(disk, secret, 0), size)),
        (
            "entry-len-past-table",
            _table(other + _entry(disk, secret, HEADER.size + len(secret) + 1), size),
        ),
        ("zero-length-passphrase", _table(other + _entry(disk, b""), size)),
        ("nul-only-passphrase", _table(other + _entry(disk, b"\0"), size)),
        ("null-guid-entry-only", _table(_entry(NULL_GUID, secret), size)),
        ("duplicate-passphrase", _table(good + _entry(disk, secret), size)),
        (
            "truncated-mid-entry",
            _table(good, size, length=after_other + HEADER.size // 2),
        ),
        ("truncated-header", _page(_table(good, size)[: HEADER.size // 2], size)),
        # Linux cannot create a second securityfs file of one GUID: no secret at all.
        (
            "duplicate-secret-guid",
            _table(other + _entry(OTHER_GUID, b"another") + _entry(disk, secret), size),
        ),
        ("too-many-secrets", _table(_many(LINUX_MAX_SECRETS + 1) + _entry(disk, secret), size)),
        # The walk stops at the corrupted entry; the passphrase behind it is unreachable.
        (
            "passphrase-after-corruption",
            _table(other + _entry(OTHER_GUID, b"x", 5) + _entry(disk, secret), size),
        ),
        ("random-bytes", random.Random(RANDOM_SEED).randbytes(size)),
        ("all-ff", b"\xff" * size),
    ]
    return tuple(pages)
