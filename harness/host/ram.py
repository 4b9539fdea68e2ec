"""A simulated guest's RAM, held by the harness: an anonymous memory file (memfd) that
QEMU maps as the guest's memory.

Only for simulated launches, which stand in for SEV hardware that is not here: on SEV
the host can neither write the guest's memory nor read it in the clear. Holding the RAM
lets the harness do two things a real secure element and a real host do:

- put the owner's secret page into guest memory before the first instruction, as
  LAUNCH_SECRET does, and *only then*: QEMU's generic loader would write it again on
  every reset, which SEV does not, and that would hide what a reset leaves behind;
- search all of the guest's memory for key material in place once the guest is done,
  without QEMU writing a dump of it anywhere.

The file has no name in any filesystem, so nothing of the guest's memory reaches a disk;
it is freed when the harness and QEMU have both closed it. QEMU opens it through
``/proc/<our pid>/fd/<n>`` (the same user), since pexpect passes no descriptors.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Mapping

from harness.errors import ConfigError

#: The id of the memory backend on QEMU's command line.
BACKEND_ID = "harness-ram"
#: Up to this size q35 maps all of RAM below 4 GiB in one piece (QEMU's lowmem split
#: starts at 2.75 GiB), so a guest-physical address is the offset into the file.
LINEAR_LIMIT_MIB = 2048


class GuestRam:
    """*size_mib* MiB of guest memory, zero until written; close it when the guest is gone."""

    def __init__(self, size_mib: int) -> None:
        if not 0 < size_mib <= LINEAR_LIMIT_MIB:
            raise ConfigError(
                f"A simulated guest's memory must be 1 to {LINEAR_LIMIT_MIB} MiB, not {size_mib}."
            )
        self.size = size_mib << 20
        self.fd = os.memfd_create("harness-guest-ram", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            os.close(self.fd)
            raise

    @property
    def path(self) -> str:
        """Where QEMU opens this file (our descriptor, seen through procfs)."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def backend(self) -> str:
        """The ``-object`` QEMU maps as the guest's RAM (``-machine memory-backend=``)."""
        return (
            f"memory-backend-file,id={BACKEND_ID},size={self.size >> 20}M,"
            f"mem-path={self.path},share=on"
        )

    def write(self, gpa: int, data: bytes) -> None:
        """Put *data* at guest-physical address *gpa* (before the guest starts)."""
        self._check(gpa, len(data))
        if os.pwrite(self.fd, data, gpa) != len(data):
            raise OSError(errno.EIO, "short write into the guest's memory")

    def read(self, gpa: int, size: int) -> bytes:
        self._check(gpa, size)
        return os.pread(self.fd, size, gpa)

    def count(
        self, needles: Mapping[str, bytes], extents: list[tuple[int, int]] | None = None
    ) -> dict[str, int]:
        """How many times each needle (name -> bytes) occurs anywhere in the memory;
        *extents* are :meth:`touched`'s, when the caller has them already.

        Only the pages the guest (or :meth:`write`) touched hold data; the rest read as
        zeros. A copy of a needle that is not all zeros has a byte in a touched extent,
        so the search covers each extent widened by the needle's length less one on both
        sides. Holes are whole pages, so no copy of a needle up to a page long reaches
        two extents and none is counted twice.
        """
        for name, needle in needles.items():
            if not needle.strip(b"\0") or len(needle) > mmap.PAGESIZE:
                raise ConfigError(
                    f"Cannot search guest memory for {name}: it must hold a byte other than "
                    f"zero and be at most {mmap.PAGESIZE} bytes long."
                )
        found = dict.fromkeys(needles, 0)
        if self.size == 0:
            return found
        with mmap.mmap(self.fd, self.size, access=mmap.ACCESS_READ) as ram:
            for start, end in self.touched() if extents is None else extents:
                for name, needle in needles.items():
                    lo = max(start - len(needle) + 1, 0)
                    hi = min(end + len(needle) - 1, self.size)
                    at = ram.find(needle, lo, hi)
                    while at >= 0:
                        found[name] += 1
                        at = ram.find(needle, at + 1, hi)
        return found

    def touched(self) -> list[tuple[int, int]]:
        """The extents ``[start, end)`` that hold data (SEEK_DATA/SEEK_HOLE)."""
        extents, at = [], 0
        while at < self.size:
            try:
                start = os.lseek(self.fd, at, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # no data after *at*
                    break
                raise
            end = os.lseek(self.fd, start, os.SEEK_HOLE)
            extents.append((start, min(end, self.size)))
            at = end
        return extents

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> GuestRam:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, gpa: int, size: int) -> None:
        if gpa < 0 or size < 0 or gpa + size > self.size:
            raise ConfigError(
                f"{size} bytes at {gpa:#x} fall outside the guest's {self.size >> 20} MiB."
            )
