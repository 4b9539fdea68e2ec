"""What a guest that boots our kernel reports of Linux's ``efi_secret`` listing.

The root's own init prints, on the serial console, in this order::

    HARNESS-SECRET guid=<guid> size=<bytes> sha256=<hex>|withheld   (one per file, ls order)
    HARNESS-AREA efi_secret=present|absent
    HARNESS-REMOVED guid=<guid>                                    (only if it removed one)
    HARNESS-PROOF from=secret|fw_cfg mac=<hex>              (harness.guest.proof judges it)
    HARNESS-BOOTED token=<token> root=<source of /> secrets=<guid>,...|none|absent

``size`` and ``sha256`` are those of the file in ``/sys/kernel/security/secrets/coco``
(the entry's data); the disk passphrase entry, should Linux list it, has its hash
``withheld``. ``secrets=none``: the directory exists and is empty; ``secrets=absent``:
there is no directory, ``efi_secret`` found no valid table. ``HARNESS-AREA``: whether the
kernel registered efi_secret's platform device, which it does exactly when the firmware
published a secret area (its ``CocoSecret`` configuration table), valid table or not.
The listing and the hashes are taken before anything is removed.

Removal is a harness convention the owner asks for: when Linux lists a file named
:data:`REMOVE_SECRET_GUID`, the init reads it, removes it (Linux's ``efi_secret_unlink``
zeroes the entry's GUID and data and keeps its length) and says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from harness.errors import InputError
from harness.firmware import guids

#: The entry the owner asks the guest to remove once it has listed it.
REMOVE_SECRET_GUID = guids.REMOVE_SECRET_ENTRY
#: The root our initramfs mounts: the kernel's dm-crypt mapping of the LUKS partition.
BUILT_ROOT = "/dev/mapper/root"
#: What the guest prints in place of the passphrase entry's hash.
WITHHELD = "withheld"

SECRET_LINE = re.compile(r"HARNESS-SECRET guid=(\S+) size=(\d+) sha256=([0-9a-f]{64}|withheld)$")
REMOVED_LINE = re.compile(r"HARNESS-REMOVED guid=(\S+)$")
AREA_LINE = re.compile(r"HARNESS-AREA efi_secret=(present|absent)$")
BOOTED_LINE = re.compile(r"HARNESS-BOOTED token=(\w+) root=(\S+) secrets=(\S+)$")
#: The end of the BOOTED line, to wait for once the marker itself has been seen.
BOOTED_LINE_END = r"secrets=\S+\s"
ABSENT = "absent"
NONE = "none"


@dataclass(frozen=True)
class ListedSecret:
    """One file Linux listed: its GUID (the file name), size and SHA-256 (None: withheld)."""

    guid: UUID
    size: int
    sha256: str | None


@dataclass(frozen=True)
class GuestReport:
    """What the guest's init reported.

    Attributes:
        entries: the HARNESS-SECRET lines, in order.
        removed: the GUID it removed, or None.
        secrets: the BOOTED line's listing; None when the directory was absent.
        area: whether Linux found the firmware's secret area; None when not reported.
    """

    entries: tuple[ListedSecret, ...]
    removed: UUID | None
    token: str
    root: str
    secrets: tuple[UUID, ...] | None
    area: bool | None = None

    @property
    def absent(self) -> bool:
        return self.secrets is None

    def entry(self, guid: UUID) -> ListedSecret | None:
        return next((e for e in self.entries if e.guid == guid), None)

    @classmethod
    def parse(cls, text: str) -> GuestReport:
        """The report in a console transcript (other lines are ignored).

        Raises:
            InputError: no BOOTED line with root= and secrets=, two of them, a malformed
                GUID, or lines that contradict each other (the message says which).
        """
        lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
        booted = [m for line in lines if (m := BOOTED_LINE.search(line))]
        if len(booted) != 1:
            raise InputError(
                f"The guest printed {len(booted)} HARNESS-BOOTED lines with root= and "
                "secrets=; its report needs exactly one."
            )
        token, root, listing = booted[0].groups()
        entries = tuple(
            ListedSecret(_guid(m.group(1)), int(m.group(2)), _hash(m.group(3)))
            for line in lines
            if (m := SECRET_LINE.search(line))
        )
        removed_lines = [_guid(m.group(1)) for line in lines if (m := REMOVED_LINE.search(line))]
        if len(removed_lines) > 1:
            raise InputError("The guest reported more than one removed secret.")
        removed = removed_lines[0] if removed_lines else None
        secrets = _listing(listing)
        listed = tuple(e.guid for e in entries)
        if len(set(listed)) != len(listed):
            raise InputError("The guest reported the same secret file twice.")
        if set(listed) != set(secrets or ()):
            raise InputError(
                f"The guest's HARNESS-SECRET lines ({describe(listed)}) and its listing "
                f"secrets={listing} disagree."
            )
        if removed is not None and removed not in listed:
            raise InputError(f"The guest removed {removed}, which it never listed.")
        areas = [m.group(1) == "present" for line in lines if (m := AREA_LINE.search(line))]
        if len(areas) > 1:
            raise InputError("The guest reported the secret area more than once.")
        area = areas[0] if areas else None
        if area is False and secrets is not None:
            raise InputError("The guest lists secrets but reports no secret area.")
        return cls(entries, removed, token, root, secrets, area)


def _guid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as err:
        raise InputError(f"The guest reported {text!r}, which is not a GUID.") from err


def _hash(text: str) -> str | None:
    return None if text == WITHHELD else text


def _listing(text: str) -> tuple[UUID, ...] | None:
    if text == ABSENT:
        return None
    if text == NONE:
        return ()
    listed = tuple(_guid(part) for part in text.split(","))
    if len(set(listed)) != len(listed):
        raise InputError(f"The guest's listing secrets={text} names a GUID twice.")
    return listed


def describe(found: Iterable[UUID]) -> str:
    """GUIDs for a message: sorted, the ones we know named; "none" for none."""
    return ", ".join(_one(g) for g in sorted(found, key=str)) or "none"


def _one(guid: UUID) -> str:
    name = guids.name_of(guid)
    return f"{guid} ({name})" if name else str(guid)
