"""The secrets the guest owner injects beside the disk passphrase.

GRUB must take only its passphrase entry and leave these alone; a guest that boots our
kernel must then list exactly these in ``/sys/kernel/security/secrets/coco``. By default
three entries of different sizes, the last one sized so that the table fills the
firmware's secret block to its last byte (``header.len`` equal to the block's size, the
largest both Linux and GRUB accept). ``./inv boot --entry GUID:FILE`` replaces them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

from harness.errors import ConfigError, SecretFormatError
from harness.files import read_private
from harness.firmware import guids
from harness.guest.report import REMOVE_SECRET_GUID
from harness.sev.secret import (
    NULL_GUID,
    SECRET_ENTRY,
    SecretEntry,
    SecretTable,
    disk_passphrase_entry,
)

#: Data sizes of the default entries but the last, which fills the block.
DEFAULT_SIZES = (20, 333)
#: What the owner asks the guest to remove (scenario secret-removed).
REMOVE_SECRET = b"harness: remove me once listed"


def _filler(guid: UUID, size: int) -> bytes:
    """Bytes that differ from entry to entry and are the same on every run."""
    return hashlib.shake_256(guid.bytes).digest(size)


def remove_entry() -> SecretEntry:
    return SecretEntry(REMOVE_SECRET_GUID, REMOVE_SECRET)


def owner_extras(
    given: Sequence[SecretEntry] | None,
    injected: bytes,
    area_size: int,
    *,
    remove: bool = False,
    nonce: bytes | None = None,
) -> tuple[SecretEntry, ...]:
    """The extra entries for a table whose passphrase entry holds *injected*.

    Args:
        given: the user's entries (``--entry``); None for the defaults.
        area_size: the firmware's secret block; the defaults fill it exactly.
        remove: add the entry the guest is asked to remove.
        nonce: add this launch's nonce, which the root answers (harness.guest.proof).

    Raises:
        SecretFormatError: the table does not fit the block (the passphrase leaves no
            room for the defaults, or the given entries are too large).
    """
    tail: tuple[SecretEntry, ...] = (remove_entry(),) if remove else ()
    if nonce is not None:
        tail += (SecretEntry(guids.PROOF_NONCE_ENTRY, nonce),)
    if given is not None:
        extras = (*given, *tail)
    else:
        fixed = tuple(
            SecretEntry(guid, _filler(guid, size))
            for guid, size in zip(guids.HARNESS_EXTRA_ENTRIES, DEFAULT_SIZES, strict=False)
        )
        last = guids.HARNESS_EXTRA_ENTRIES[len(DEFAULT_SIZES)]
        used = SecretTable((disk_passphrase_entry(injected), *fixed, *tail)).length
        room = area_size - used - SECRET_ENTRY.size
        if room < 0:
            raise SecretFormatError(
                f"The passphrase leaves no room in the {area_size}-byte secret block for "
                "the default extra secrets."
            )
        extras = (*fixed, *tail, SecretEntry(last, _filler(last, room)))
    SecretTable((disk_passphrase_entry(injected), *extras)).serialize(area_size)
    return extras


def read_entries(specs: Sequence[str]) -> tuple[SecretEntry, ...] | None:
    """The ``--entry GUID:FILE`` options as entries; None when there are none.

    Raises:
        ConfigError: not GUID:FILE, a GUID the harness reserves (null, the disk
            passphrase, the removal instruction, the proof's nonce) or given twice.
        InputError: a file missing, unreadable, or readable by group or others.
    """
    if not specs:
        return None
    entries: list[SecretEntry] = []
    for spec in specs:
        guid_text, sep, path = spec.partition(":")
        if not sep or not path:
            raise ConfigError(f"--entry {spec!r} is not of the form GUID:FILE.")
        try:
            guid = UUID(guid_text)
        except ValueError as err:
            raise ConfigError(f"--entry {spec!r}: {guid_text!r} is not a GUID.") from err
        if guid in (NULL_GUID, guids.DISK_PASSPHRASE_ENTRY, REMOVE_SECRET_GUID,
                    guids.PROOF_NONCE_ENTRY):  # fmt: skip
            raise ConfigError(f"--entry {guid}: {_reserved(guid)}.")
        if any(e.guid == guid for e in entries):
            raise ConfigError(f"--entry {guid} is given twice.")
        entries.append(SecretEntry(guid, read_private(Path(path), f"secret entry {guid}")))
    return tuple(entries)


def _reserved(guid: UUID) -> str:
    if guid == NULL_GUID:
        return "the all-zero GUID marks a deleted entry"
    if guid == guids.DISK_PASSPHRASE_ENTRY:
        return "the disk passphrase entry is the harness's, from the image"
    if guid == guids.PROOF_NONCE_ENTRY:
        return "the harness puts each launch's nonce there, for the root's proof"
    return "the harness asks the guest to remove this entry (scenario secret-removed)"
