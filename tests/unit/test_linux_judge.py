"""Linux's efi_secret listing, judged: the guest's report, the owner's extras and the page.

Scripted reports and fake pages: every judge must fail when the guest (or the page)
does what the owner did not ask for.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from harness.boots import extras, linux, prepare, runner, scenarios, verdicts
from harness.boots.linux import LinuxSees
from harness.errors import ConfigError, GuestVerdict, InputError, SecretFormatError
from harness.firmware import guids
from harness.firmware.guidtable import MemoryBlock
from harness.guest.imagemeta import GuestKernel, Image, ImageMetadata, LuksVariant
from harness.guest.report import BUILT_ROOT, REMOVE_SECRET_GUID, GuestReport
from harness.host import qemu
from harness.passphrase import Passphrase
from harness.sev.secret import (
    DEFAULT_SECRET_AREA,
    SECRET_HEADER,
    SecretEntry,
    SecretTable,
    disk_passphrase_entry,
)
from tests.fakeguest import console

PASSPHRASE = b"owner-passphrase-24bytes"
TOKEN = "abc123"
EXTRAS = extras.owner_extras(None, PASSPHRASE, DEFAULT_SECRET_AREA)
REMOVING = extras.owner_extras(None, PASSPHRASE, DEFAULT_SECRET_AREA, remove=True)
STRANGER = SecretEntry(uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100"), b"not the owner's")


def lines(
    listed: Sequence[SecretEntry],
    *,
    root: str = BUILT_ROOT,
    removed: uuid.UUID | None = None,
    absent: bool = False,
    area: str | None = "present",
) -> str:
    """What the guest's init prints for *listed* (hashes of the entries' data)."""
    out = [
        f"HARNESS-SECRET guid={e.guid} size={len(e.data)} sha256="
        + (
            "withheld"
            if e.guid == guids.DISK_PASSPHRASE_ENTRY
            else hashlib.sha256(e.data).hexdigest()
        )
        for e in listed
    ]
    if area is not None:
        out.append(f"HARNESS-AREA efi_secret={area}")
    if removed is not None:
        out.append(f"HARNESS-REMOVED guid={removed}")
    secrets = "absent" if absent else ",".join(str(e.guid) for e in listed) or "none"
    out.append(f"HARNESS-BOOTED token={TOKEN} root={root} secrets={secrets}")
    return "[    1.0] kernel noise\r\n" + "\r\n".join(out) + "\r\n"


def report(listed: Sequence[SecretEntry], **kwargs: object) -> GuestReport:
    return GuestReport.parse(lines(listed, **kwargs))  # type: ignore[arg-type]


def matched(call: object, *args: object) -> str:
    with pytest.raises(GuestVerdict) as err:
        call(*args)  # type: ignore[operator]
    return err.value.matched


def owner_table(entries: Sequence[SecretEntry]) -> SecretTable:
    return SecretTable((disk_passphrase_entry(PASSPHRASE), *entries))


def page_after(
    entries: Sequence[SecretEntry], *, remove: uuid.UUID | None = None, keep_len: bool = True
) -> bytes:
    """The page once GRUB wiped the passphrase entry and Linux removed *remove*."""
    table = owner_table(entries)
    page = bytearray(table.serialize(DEFAULT_SECRET_AREA).ljust(DEFAULT_SECRET_AREA, b"\0"))
    at = SECRET_HEADER.size
    for entry in table.entries:
        if entry.guid in (guids.DISK_PASSPHRASE_ENTRY, remove):
            page[at : at + 16] = bytes(16)
            page[at + 20 : at + entry.length] = bytes(entry.length - 20)
            if not keep_len:
                struct.pack_into("<I", page, at + 16, 20)
        at += entry.length
    return bytes(page)


# -- the report ----------------------------------------------------------------------


def test_the_report_parses() -> None:
    r = report(REMOVING, removed=REMOVE_SECRET_GUID)
    assert r.token == TOKEN and r.root == BUILT_ROOT
    assert r.secrets == tuple(e.guid for e in REMOVING)
    assert r.removed == REMOVE_SECRET_GUID
    assert r.entries[0].size == len(REMOVING[0].data)
    assert report([], absent=True).secrets is None
    assert report([]).secrets == ()
    withheld = report([disk_passphrase_entry(PASSPHRASE)])
    assert withheld.entries[0].sha256 is None


@pytest.mark.parametrize(
    "text",
    [
        "HARNESS-BOOTED token=abc\n",  # a Debian guest's marker: no report
        lines(EXTRAS) + lines(EXTRAS),  # two BOOTED lines
        lines(EXTRAS).replace(f"guid={EXTRAS[0].guid}", "guid=nonsense"),
        lines(EXTRAS).replace(f"secrets={EXTRAS[0].guid},", "secrets="),  # line not listed
        lines(EXTRAS[:1], removed=REMOVE_SECRET_GUID),  # removed what it never listed
        lines(EXTRAS, absent=True),  # lines for an absent directory
        lines(EXTRAS, area="absent"),  # secrets listed without an area
        lines(EXTRAS) + "HARNESS-AREA efi_secret=present\n",  # the area reported twice
    ],
)
def test_a_contradictory_report_is_refused(text: str) -> None:
    with pytest.raises(InputError):
        GuestReport.parse(text)


def test_await_report_reads_the_rest_of_the_marker_line(tmp_path: Path) -> None:
    con, _ = console(tmp_path, lines(EXTRAS))
    con.expect_any({"marker": verdicts.MARKER}, 5)
    assert verdicts.await_report(con, 5).secrets == tuple(e.guid for e in EXTRAS)


def test_a_garbled_report_is_a_verdict(tmp_path: Path) -> None:
    con, _ = console(tmp_path, lines(EXTRAS).replace("sha256=", "sha=", 1))
    con.expect_any({"marker": verdicts.MARKER}, 5)
    assert matched(verdicts.await_report, con, 5) == "report"


# -- Linux's listing against what the owner injected ----------------------------------


def test_the_injected_extras_listed_pass() -> None:
    assert "3 extra secrets" in linux.judge_report(report(EXTRAS), LinuxSees.TABLE, EXTRAS, "")


@pytest.mark.parametrize(
    "listed, why",
    [
        (EXTRAS[:-1], "secrets"),  # one missing
        ((*EXTRAS, STRANGER), "secrets"),  # one too many
        ((disk_passphrase_entry(PASSPHRASE), *EXTRAS), "passphrase listed"),
        ((*EXTRAS[:-1], SecretEntry(EXTRAS[-1].guid, EXTRAS[-1].data[:-1])), "size"),
        ((*EXTRAS[:-1], SecretEntry(EXTRAS[-1].guid, bytes(len(EXTRAS[-1].data)))), "sha256"),
    ],
)
def test_a_listing_other_than_the_owners_fails(listed: tuple[SecretEntry, ...], why: str) -> None:
    assert matched(linux.judge_report, report(listed), LinuxSees.TABLE, EXTRAS, "") == why


def test_a_table_that_reached_linux_must_be_found() -> None:
    absent = report([], absent=True)
    assert matched(linux.judge_report, absent, LinuxSees.TABLE, EXTRAS, "") == "secrets"


def test_linux_must_find_the_secret_area_the_firmware_publishes() -> None:
    """Whether a table was injected or not, the firmware always publishes the area."""
    for sees in LinuxSees:
        listed = [] if sees is LinuxSees.NOTHING else EXTRAS
        no_area = report([], absent=True, area="absent")
        unsaid = report(listed, absent=sees is LinuxSees.NOTHING, area=None)
        assert matched(linux.judge_report, no_area, sees, EXTRAS, "") == "area"
        assert matched(linux.judge_report, unsaid, sees, EXTRAS, "") == "area"
    said = linux.judge_report(report([], absent=True), LinuxSees.NOTHING, EXTRAS, "")
    assert "secret area and no table" in said


def test_the_root_must_be_the_kernels_mapping() -> None:
    wrong_root = report(EXTRAS, root="/dev/vda1")
    assert matched(linux.judge_report, wrong_root, LinuxSees.TABLE, EXTRAS, "") == "root"
    planted = report([], absent=True, root="/dev/vda1")
    assert matched(linux.judge_report, planted, LinuxSees.PLANTED, (), "") == "root"


def test_nothing_injected_means_no_table() -> None:
    assert "no table in it" in linux.judge_report(
        report([], absent=True), LinuxSees.NOTHING, (), ""
    )
    for listed in ([], [STRANGER]):  # an empty directory is a table too
        assert matched(linux.judge_report, report(listed), LinuxSees.NOTHING, (), "") == "secrets"


def test_a_planted_page_has_no_owner_expectation() -> None:
    for r in (report([STRANGER]), report([], absent=True)):
        assert "planted" in linux.judge_report(r, LinuxSees.PLANTED, (), "")


# -- the second opinion: the page against Linux's listing -----------------------------


def test_the_page_agrees_with_linux() -> None:
    assert "agrees" in linux.compare_page(report(EXTRAS), page_after(EXTRAS), "")
    removed = report(REMOVING, removed=REMOVE_SECRET_GUID)
    assert "agrees" in linux.compare_page(
        removed, page_after(REMOVING, remove=REMOVE_SECRET_GUID), ""
    )
    nothing = bytes(DEFAULT_SECRET_AREA)
    assert "no valid" in linux.compare_page(report([], absent=True), nothing, "")


def _flip(page: bytes, at: int) -> bytes:
    return page[:at] + bytes([page[at] ^ 0xFF]) + page[at + 1 :]


@pytest.mark.parametrize(
    "listed, page",
    [
        (EXTRAS[:-1], page_after(EXTRAS)),  # the page holds one Linux did not list
        ((*EXTRAS, STRANGER), page_after(EXTRAS)),  # Linux lists one the page lacks
        (EXTRAS, bytes(DEFAULT_SECRET_AREA)),  # Linux found a table, the page has none
        (EXTRAS, page_after(EXTRAS)[:-1] + b"\x01"),  # other bytes in the last entry
        (EXTRAS, _flip(page_after(EXTRAS), 16)),  # header length past the area
    ],
)
def test_a_page_that_disagrees_with_linux_fails(
    listed: tuple[SecretEntry, ...], page: bytes
) -> None:
    assert matched(linux.compare_page, report(listed), page, "") == "second opinion"


def test_linux_finding_no_table_where_the_page_holds_one_fails() -> None:
    absent = report([], absent=True)
    assert matched(linux.compare_page, absent, page_after(EXTRAS), "") == "second opinion"
    # An empty table is a table: Linux makes the directory, lists nothing.
    empty = SecretTable(()).serialize().ljust(DEFAULT_SECRET_AREA, b"\0")
    assert matched(linux.compare_page, absent, empty, "") == "second opinion"
    assert "agrees" in linux.compare_page(report([]), empty, "")


def test_a_removed_entry_still_on_the_page_disagrees() -> None:
    removed = report(REMOVING, removed=REMOVE_SECRET_GUID)
    assert matched(linux.compare_page, removed, page_after(REMOVING), "") == "second opinion"


# -- the removal -----------------------------------------------------------------------


def _check_removal(r: GuestReport, page: bytes) -> str:
    return linux.check_removal(r, page, owner_table(REMOVING), REMOVE_SECRET_GUID, "")


def test_a_linux_style_removal_passes() -> None:
    r = report(REMOVING, removed=REMOVE_SECRET_GUID)
    assert "length and place kept" in _check_removal(
        r, page_after(REMOVING, remove=REMOVE_SECRET_GUID)
    )


def _removed_at() -> int:
    table = owner_table(REMOVING)
    at = SECRET_HEADER.size
    for entry in table.entries:
        if entry.guid == REMOVE_SECRET_GUID:
            return at
        at += entry.length
    raise AssertionError("no removal entry")


def test_a_bad_removal_fails() -> None:
    r = report(REMOVING, removed=REMOVE_SECRET_GUID)
    good = page_after(REMOVING, remove=REMOVE_SECRET_GUID)
    at = _removed_at()
    data_left = good[: at + 20] + extras.REMOVE_SECRET + good[at + 20 + len(extras.REMOVE_SECRET) :]
    guid_left = good[:at] + REMOVE_SECRET_GUID.bytes_le + good[at + 16 :]
    shortened = page_after(REMOVING, remove=REMOVE_SECRET_GUID, keep_len=False)
    damaged = _flip(good, DEFAULT_SECRET_AREA - 1)
    assert matched(_check_removal, r, data_left) == "not zeroed"
    assert matched(_check_removal, r, guid_left) == "not zeroed"
    assert matched(_check_removal, r, shortened) in ("moved", "corrupted")
    # The entry dropped and the rest moved up: a table Linux reads, but not in place.
    kept = [e for e in REMOVING if e.guid != REMOVE_SECRET_GUID]
    compacted = page_after(kept)
    assert "agrees" in linux.compare_page(r, compacted, "")
    assert matched(_check_removal, r, compacted) == "moved"
    assert matched(_check_removal, r, damaged) == "damaged"
    assert matched(_check_removal, report(REMOVING), good) == "not removed"


# -- the owner's extras -----------------------------------------------------------------


@pytest.mark.parametrize("area", [DEFAULT_SECRET_AREA, 0x1000, 0x400])
@pytest.mark.parametrize("remove", [False, True])
def test_the_default_extras_fill_the_secret_block(area: int, remove: bool) -> None:
    found = extras.owner_extras(None, PASSPHRASE, area, remove=remove)
    table = owner_table(found)
    assert table.length == area == len(table.serialize(area))
    assert len({e.guid for e in found}) == len(found) == 3 + remove
    assert len({len(e.data) for e in found}) == len(found)  # sizes differ
    assert (REMOVE_SECRET_GUID in {e.guid for e in found}) == remove
    assert found[-1].guid == guids.HARNESS_EXTRA_ENTRIES[-1]
    assert SecretTable.parse(table.serialize(area)) == table  # Linux takes it whole


def test_a_passphrase_too_long_for_the_defaults_is_refused() -> None:
    with pytest.raises(SecretFormatError, match="no room"):
        extras.owner_extras(None, b"p" * 0x400, 0x400)


def test_given_entries_replace_the_defaults_and_must_fit() -> None:
    assert extras.owner_extras([STRANGER], PASSPHRASE, DEFAULT_SECRET_AREA) == (STRANGER,)
    big = SecretEntry(STRANGER.guid, bytes(DEFAULT_SECRET_AREA))
    with pytest.raises(SecretFormatError, match="more than"):
        extras.owner_extras([big], PASSPHRASE, DEFAULT_SECRET_AREA)


def _secret_file(tmp_path: Path, name: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_bytes(b"entry bytes " + name.encode())
    os.chmod(path, mode)
    return path


def test_entries_are_read_from_private_files(tmp_path: Path) -> None:
    a, b = _secret_file(tmp_path, "a"), _secret_file(tmp_path, "b", 0o400)
    got = extras.read_entries([f"{STRANGER.guid}:{a}", f"{guids.HARNESS_EXTRA_ENTRIES[0]}:{b}"])
    assert got is not None and [e.data for e in got] == [b"entry bytes a", b"entry bytes b"]
    assert extras.read_entries([]) is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{a}", "GUID:FILE"),
        ("not-a-guid:{a}", "not a GUID"),
        ("00000000-0000-0000-0000-000000000000:{a}", "deleted entry"),
        (f"{guids.DISK_PASSPHRASE_ENTRY}:{{a}}", "disk passphrase"),
        (f"{REMOVE_SECRET_GUID}:{{a}}", "remove"),
        (f"{STRANGER.guid}:{{a}} {STRANGER.guid}:{{a}}", "twice"),
        (f"{STRANGER.guid}:{{shared}}", "group or others"),
        (f"{STRANGER.guid}:{{world}}", "group or others"),
        (f"{STRANGER.guid}:{{missing}}", "does not exist"),
    ],
)
def test_bad_entries_are_refused_in_one_sentence(tmp_path: Path, spec: str, message: str) -> None:
    files = {
        "a": _secret_file(tmp_path, "a"),
        "shared": _secret_file(tmp_path, "shared", 0o640),
        "world": _secret_file(tmp_path, "world", 0o604),
        "missing": tmp_path / "missing",
    }
    with pytest.raises(InputError, match=message) as err:
        extras.read_entries(spec.format(**files).split(" "))
    assert isinstance(err.value, (ConfigError, InputError))
    assert b"entry bytes" not in str(err.value).encode()


# -- the wiring: a booted guest with our kernel, judged end to end ---------------------


class _Guest:
    """A booted guest: a scripted console and the page pmemsave reads after power-off."""

    def __init__(self, tmp_path: Path, text: str, page: bytes) -> None:
        self.console, _ = console(tmp_path, text)
        self.page = page

    def pmemsave(self, gpa: int, size: int, dest: Path) -> bytes:
        return self.page


def _after_boot(tmp_path: Path, name: str, text: str, page: bytes) -> list[str]:
    scenario = scenarios.SCENARIOS[name]
    table = owner_table(REMOVING if scenario.removes else EXTRAS)
    launch = prepare.Launch(
        cast(Any, None),
        Passphrase(b"wrong"),
        MemoryBlock(0x80_0000, DEFAULT_SECRET_AREA),
        [],
        "5a" * 32,
        "secret",
        table=table,
        extras=table.entries[1:],
        page_after=True,
    )
    guest = _Guest(tmp_path, text, page)
    guest.console.expect_any({"marker": verdicts.MARKER}, 5)
    return runner._after_boot(
        scenario, cast(Any, guest), launch, _target(tmp_path, GuestKernel.BUILT), tmp_path, 5
    )


def _target(tmp_path: Path, kernel: GuestKernel) -> prepare.Target:
    """An image that boots *kernel*, and a firmware; neither is read by what uses it."""
    img = Image(
        tmp_path / "disk",
        tmp_path / "passphrase",
        ImageMetadata(LuksVariant.LUKS1, "token", guest_kernel=kernel),
    )
    return prepare.Target(prepare.Firmware(tmp_path / "OVMF.fd", b""), img, Passphrase(PASSPHRASE))


def test_secret_removed_end_to_end(tmp_path: Path) -> None:
    text = lines(REMOVING, removed=REMOVE_SECRET_GUID)
    notes = _after_boot(
        tmp_path, "secret-removed", text, page_after(REMOVING, remove=REMOVE_SECRET_GUID)
    )
    assert [n.split(" ")[0] for n in notes] == ["Linux", "the", "Linux"]
    with pytest.raises(GuestVerdict):
        _after_boot(tmp_path / "x", "secret-removed", text, page_after(REMOVING))


def test_secret_wiped_with_our_kernel_end_to_end(tmp_path: Path) -> None:
    notes = _after_boot(tmp_path, "secret-wiped", lines(EXTRAS), page_after(EXTRAS))
    assert len(notes) == 3 and "3 extra secrets intact" in notes[1]
    with pytest.raises(GuestVerdict):
        _after_boot(tmp_path / "x", "secret-wiped", lines(EXTRAS[:2]), page_after(EXTRAS))


def test_secret_removed_is_refused_on_a_debian_image(tmp_path: Path) -> None:

    with (
        pytest.raises(ConfigError, match="boots our kernel"),
        prepare.prepared(
            scenarios.SCENARIOS["secret-removed"],
            _target(tmp_path, GuestKernel.DEBIAN),
            prepare.Machine(qemu.Accel.TCG),
            tmp_path,
        ),
    ):
        pass
