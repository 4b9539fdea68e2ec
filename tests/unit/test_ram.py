"""The simulated guest's memory the harness holds (harness.host.ram), on a real memfd."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

import pytest

from harness.errors import ConfigError
from harness.host.ram import GuestRam

PAGE = mmap.PAGESIZE


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    with GuestRam(4) as r:
        yield r


def test_written_bytes_read_back_where_they_were_put(ram: GuestRam) -> None:
    ram.write(0x10000, b"page")
    assert ram.read(0x10000, 4) == b"page"
    assert ram.read(0, 4) == bytes(4)


def test_an_untouched_memory_has_no_data(ram: GuestRam) -> None:
    assert ram.touched() == []
    assert ram.count({"key": b"k" * 32}) == {"key": 0}


def test_copies_are_counted_in_touched_pages_only(ram: GuestRam) -> None:
    ram.write(3 * PAGE + 100, b"KEY-ONE" + b"-" + b"KEY-ONE")
    ram.write(2 << 20, b"xxKEY-ONExx")
    assert ram.touched() == [(3 * PAGE, 4 * PAGE), (2 << 20, (2 << 20) + PAGE)]
    assert ram.count({"one": b"KEY-ONE", "two": b"KEY-TWO"}) == {"one": 3, "two": 0}


def test_a_copy_across_two_touched_pages_counts_once(ram: GuestRam) -> None:
    ram.write(PAGE - 3, b"SPLIT!")
    assert ram.touched() == [(0, 2 * PAGE)]
    assert ram.count({"split": b"SPLIT!"}) == {"split": 1}


def test_a_copy_that_starts_with_zeros_in_a_hole_is_found(ram: GuestRam) -> None:
    """The needle's leading zeros lie in an untouched page; its other bytes do not."""
    ram.write(5 * PAGE, b"tail")
    assert ram.count({"zeros then tail": b"\0\0\0tail"}) == {"zeros then tail": 1}


def test_a_needle_of_zeros_or_longer_than_a_page_is_refused(ram: GuestRam) -> None:
    with pytest.raises(ConfigError, match="other than zero"):
        ram.count({"zeros": bytes(32)})
    with pytest.raises(ConfigError, match="at most"):
        ram.count({"long": b"x" * (PAGE + 1)})


def test_writes_outside_the_memory_are_refused(ram: GuestRam) -> None:
    with pytest.raises(ConfigError, match="outside the guest's 4 MiB"):
        ram.write((4 << 20) - 2, b"abc")
    with pytest.raises(ConfigError, match="1 to 2048 MiB"):
        GuestRam(4096)


def test_qemu_opens_it_through_procfs_and_sees_the_same_bytes(ram: GuestRam) -> None:
    """Another open of the path QEMU is given is the same memory, both ways."""
    ram.write(0x2000, b"from the harness")
    fd = os.open(ram.path, os.O_RDWR)
    try:
        assert os.pread(fd, 16, 0x2000) == b"from the harness"
        os.pwrite(fd, b"from the guest", 0x3000)
    finally:
        os.close(fd)
    assert ram.read(0x3000, 14) == b"from the guest"
    assert f"mem-path={ram.path},share=on" in ram.backend()
    assert "size=4M" in ram.backend()
