"""A writer for the cpio "newc" format the Linux kernel unpacks as an initramfs.

Layout (Linux ``Documentation/driver-api/early-userspace/buffer-format.rst``): per
entry a 110-byte ASCII header ``070701`` + 13 eight-digit hex fields, the NUL-terminated
name padded to 4 bytes, the data padded to 4 bytes; the archive ends with the entry
``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    data: bytes = b""


def _pad4(n: int) -> bytes:
    return bytes(-n % 4)


def newc(entries: list[Entry]) -> bytes:
    """Serialize *entries* (directories before their contents) as a newc archive."""
    out = bytearray()
    for ino, e in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = e.name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        fields = [ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, 0, 0, len(name), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + name + _pad4(len(header) + len(name))
        out += e.data + _pad4(len(e.data))
    return bytes(out)
