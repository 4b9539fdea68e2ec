"""Malformed secret pages: each is refused where Linux's efi_secret refuses it, and
none of them offers a usable disk passphrase."""

from __future__ import annotations

import pytest

from harness.errors import SecretFormatError
from harness.firmware import guids
from harness.sev.malformed import LINUX_ACCEPTS, malformed_tables
from harness.sev.secret import DEFAULT_SECRET_AREA, SecretTable

PASSPHRASE = b"correct horse battery staple"
PAGES = dict(malformed_tables(PASSPHRASE))
#: What the issue asks the list to cover, beyond which each page is planted.
REQUIRED = {
    "wrong-header-guid",
    "header-len-past-area",
    "header-len-too-small",
    "entry-len-too-small",
    "entry-len-past-table",
    "zero-length-passphrase",
    "null-guid-entry-only",
    "duplicate-passphrase",
    "truncated-mid-entry",
    "random-bytes",
    "all-ff",
}


def test_the_list_covers_every_case_once_and_each_page_is_one_secret_block() -> None:
    names = [name for name, _ in malformed_tables(PASSPHRASE)]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED
    assert set(names) >= set(LINUX_ACCEPTS)
    assert {len(page) for page in PAGES.values()} == {DEFAULT_SECRET_AREA}
    assert {len(p) for _, p in malformed_tables(PASSPHRASE, size=0x1000)} == {0x1000}


def test_the_pages_are_the_same_every_time() -> None:
    assert dict(malformed_tables(PASSPHRASE)) == PAGES


@pytest.mark.parametrize("name", sorted(set(PAGES) - set(LINUX_ACCEPTS)))
def test_parse_refuses_what_linux_refuses(name: str) -> None:
    with pytest.raises(SecretFormatError):
        SecretTable.parse(PAGES[name])


@pytest.mark.parametrize("name", sorted(LINUX_ACCEPTS))
def test_what_linux_accepts_holds_no_usable_passphrase(name: str) -> None:
    """The same rule GRUB applies: a live passphrase entry, one trailing NUL dropped,
    must leave something to unlock with."""
    table = SecretTable.parse(PAGES[name])
    entry = table.get(guids.DISK_PASSPHRASE_ENTRY)
    assert entry is None or entry.data.removesuffix(b"\0") == b""


@pytest.mark.parametrize(
    "name",
    ["wrong-header-guid", "header-len-past-area", "entry-len-past-table", "truncated-mid-entry"],
)
def test_the_real_passphrase_is_planted_where_there_is_room(name: str) -> None:
    """So that a GRUB which wrongly accepts the page boots without a prompt."""
    assert PASSPHRASE + b"\0" in PAGES[name]


def test_fixing_the_one_fault_gives_a_table_with_the_passphrase() -> None:
    """The pages differ from a good table only where they say they do."""
    page = bytearray(PAGES["wrong-header-guid"])
    page[0] ^= 0x01
    table = SecretTable.parse(bytes(page))
    entry = table.get(guids.DISK_PASSPHRASE_ENTRY)
    assert entry is not None and entry.data == PASSPHRASE + b"\0"


def test_every_page_out_of_grubs_reach_is_one_of_the_family() -> None:
    from harness.sev.malformed import PASSPHRASE_OUT_OF_REACH

    assert set(PASSPHRASE_OUT_OF_REACH) <= set(PAGES)
    # Each of them does carry the passphrase, or listing it would excuse nothing.
    assert all(PASSPHRASE in PAGES[name] for name in PASSPHRASE_OUT_OF_REACH)
