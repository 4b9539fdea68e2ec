"""Judging what Linux's ``efi_secret`` listed, for images that boot our kernel.

Three witnesses are held against each other: what the owner injected, what Linux
listed (the guest's :class:`~harness.guest.report.GuestReport`), and the secret page
read after the guest powered off, parsed here with Linux's own rules
(:meth:`SecretTable.parse`). Pure functions over those; each raises
:class:`GuestVerdict` with a short reason, or returns a note for the boot's result.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from uuid import UUID

from harness.errors import GuestVerdict, SecretFormatError
from harness.firmware import guids
from harness.guest.report import BUILT_ROOT, GuestReport, describe
from harness.sev.secret import SecretEntry, SecretTable


class LinuxSees(enum.StrEnum):
    """What Linux must find in the secret area."""

    TABLE = "table"  # the owner's table reached the guest: its extras, nothing else
    NOTHING = "nothing"  # no table was injected: efi_secret finds no valid table
    PLANTED = "planted"  # a page the owner did not write: no expectation of the owner


def judge_report(
    report: GuestReport, sees: LinuxSees, extras: Sequence[SecretEntry], tail: str
) -> str:
    """Hold Linux's listing against what the owner injected (*extras*, beside the
    passphrase).

    Raises:
        GuestVerdict: the root is not the kernel's dm-crypt mapping, or the listing is
            not what *sees* requires.
    """
    if report.root != BUILT_ROOT:
        raise GuestVerdict(
            f"The guest's root is {report.root}, not {BUILT_ROOT}: our kernel did not unlock it.",
            "root",
            tail,
        )
    if report.area is not True:
        raise GuestVerdict(
            "Linux did not find the firmware's secret area (no efi_secret device), though "
            "the firmware publishes one."
            if report.area is False
            else "The guest did not report whether Linux found the secret area.",
            "area",
            tail,
        )
    if sees is LinuxSees.NOTHING:
        if not report.absent:
            raise GuestVerdict(
                "Nothing was injected, yet Linux found a secret table and lists "
                f"{describe(report.secrets or ())}.",
                "secrets",
                tail,
            )
        return "Linux found the secret area and no table in it, as none was injected"
    if sees is LinuxSees.PLANTED:
        return f"Linux lists {_listed(report)} from the planted page"
    return check_listing(report, extras, tail)


def check_listing(report: GuestReport, extras: Sequence[SecretEntry], tail: str) -> str:
    """Linux lists exactly *extras*, each with its size and SHA-256, never the passphrase.

    Raises:
        GuestVerdict: a GUID missing or one too many, the passphrase entry listed, a
            size or hash that is not the injected bytes'.
    """
    if report.secrets is None:
        raise GuestVerdict(
            "The owner's table reached the guest, yet Linux found no valid secret table.",
            "secrets",
            tail,
        )
    listed = set(report.secrets)
    if guids.DISK_PASSPHRASE_ENTRY in listed:
        raise GuestVerdict(
            "Linux lists the disk passphrase entry: GRUB left it in the table.",
            "passphrase listed",
            tail,
        )
    wanted = {e.guid for e in extras}
    if listed != wanted:
        raise GuestVerdict(
            f"Linux lists {describe(listed)}; the owner injected {describe(wanted)} "
            f"(missing: {describe(wanted - listed)}; not injected: {describe(listed - wanted)}).",
            "secrets",
            tail,
        )
    for injected in extras:
        seen = report.entry(injected.guid)
        assert seen is not None  # GuestReport.parse: the lines match the listing
        if seen.size != len(injected.data):
            raise GuestVerdict(
                f"Linux shows {injected.guid} with {seen.size} bytes; the owner injected "
                f"{len(injected.data)}.",
                "size",
                tail,
            )
        if seen.sha256 != hashlib.sha256(injected.data).hexdigest():
            raise GuestVerdict(
                f"Linux shows {injected.guid} with other bytes than the owner injected "
                "(SHA-256 differs).",
                "sha256",
                tail,
            )
    return (
        f"Linux lists the {len(extras)} extra secrets the owner injected, sizes and "
        "hashes matching, and not the passphrase"
    )


def compare_page(report: GuestReport, page: bytes, tail: str) -> str:
    """The second opinion: the page read after the guest powered off, parsed by the
    harness under Linux's rules, against what Linux listed.

    The live GUIDs on the page must be Linux's listing less the entry it removed, each
    with the size and SHA-256 Linux showed; Linux found no table exactly when the page
    does not parse.

    Raises:
        GuestVerdict: the two disagree (the message names both sides).
    """
    linux = None if report.secrets is None else set(report.secrets) - {report.removed}
    try:
        table: SecretTable | None = SecretTable.parse(page)
        why = ""
    except SecretFormatError as err:
        table, why = None, err.message
    if table is None or linux is None:
        if table is None and linux is None:
            return "the harness's parser agrees: the page holds no valid secret table"
        theirs = "no valid table" if linux is None else f"a table listing {describe(linux)}"
        ours = f"no valid table ({why})" if table is None else _live(table)
        raise GuestVerdict(
            f"Linux found {theirs}, the harness's parser of the page found {ours}.",
            "second opinion",
            tail,
        )
    on_page = {e.guid for e in table.live}
    if on_page != linux:
        raise GuestVerdict(
            f"Linux lists {describe(linux)} (after removal), the page holds {describe(on_page)}.",
            "second opinion",
            tail,
        )
    for entry in table.live:
        seen = report.entry(entry.guid)
        assert seen is not None
        if seen.size != len(entry.data) or (
            seen.sha256 is not None and seen.sha256 != hashlib.sha256(entry.data).hexdigest()
        ):
            other = " of other data" if seen.size == len(entry.data) else ""
            raise GuestVerdict(
                f"Linux shows {entry.guid} with {seen.size} bytes, the page holds "
                f"{len(entry.data)} bytes{other}.",
                "second opinion",
                tail,
            )
    return f"the harness's parser agrees: the page holds {_live(table)}"


def check_removal(
    report: GuestReport, page: bytes, injected: SecretTable, removed: UUID, tail: str
) -> str:
    """Linux removed *removed* as ``efi_secret_unlink`` must: GUID and data zeroed, length
    kept, in place; every other extra entry intact.

    *injected* is the table the owner injected; its passphrase entry is GRUB's to wipe
    and is not judged here.

    Raises:
        GuestVerdict: the guest did not report the removal, or the page shows it done
            otherwise.
    """
    if report.removed != removed:
        raise GuestVerdict(
            f"The guest did not report removing {removed} (it removed "
            f"{report.removed or 'nothing'}).",
            "not removed",
            tail,
        )
    try:
        table = SecretTable.parse(page)
    except SecretFormatError as err:
        raise GuestVerdict(
            f"After the removal the page no longer parses: {err.message}", "corrupted", tail
        ) from err
    if [e.length for e in table.entries] != [e.length for e in injected.entries]:
        raise GuestVerdict(
            "After the removal the page's entries have other lengths or places than the "
            "owner injected: the removed entry's length was not kept.",
            "moved",
            tail,
        )
    for before, after in zip(injected.entries, table.entries, strict=True):
        if before.guid == guids.DISK_PASSPHRASE_ENTRY:
            continue
        if before.guid == removed:
            if not after.deleted or any(after.data):
                raise GuestVerdict(
                    f"The removed entry {removed} still has its GUID or data on the page.",
                    "not zeroed",
                    tail,
                )
        elif after != before:
            raise GuestVerdict(
                f"Removing {removed} damaged {before.guid} on the page.", "damaged", tail
            )
    return (
        f"Linux removed {removed}: GUID and data zero, length and place kept, the other "
        "extra secrets intact"
    )


def _listed(report: GuestReport) -> str:
    return "no table" if report.secrets is None else describe(report.secrets)


def _live(table: SecretTable) -> str:
    return f"a table with {describe(e.guid for e in table.live)}"
