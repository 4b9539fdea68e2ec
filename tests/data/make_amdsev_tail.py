"""Regenerate tests/data/amdsev-tail.bin (see tests/data/README.md).

Usage: .venv/bin/python tests/data/make_amdsev_tail.py /usr/share/ovmf/OVMF.fd
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

from harness.firmware import guids
from harness.firmware.guidtable import parse_guid_table

#: Debian bookworm ovmf 2022.11-6+deb12u2, /usr/share/ovmf/OVMF.fd.
SOURCE_SHA256 = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773"
TAIL = 4096
#: The AmdSevX64 MEMFD layout of edk2 2022.11: secret page at 0x80C000, its first
#: 0xC00 bytes for the secret, the last 0x400 for QEMU's kernel hashes table.
AMDSEV_BLOCKS = {
    guids.SEV_SECRET_BLOCK: (0x80C000, 0xC00),
    guids.SEV_HASH_TABLE_BLOCK: (0x80CC00, 0x400),
}


def main(source: Path) -> None:
    image = source.read_bytes()
    if hashlib.sha256(image).hexdigest() != SOURCE_SHA256:
        sys.exit(f"{source} is not the Debian image this fixture is made from")
    tail = bytearray(image[-TAIL:])
    table = parse_guid_table(bytes(tail))
    assert table is not None
    for guid, (base, size) in AMDSEV_BLOCKS.items():
        entry = table.get(guid)
        assert entry is not None
        struct.pack_into("<II", tail, entry.offset, base, size)
    out = Path(__file__).with_name("amdsev-tail.bin")
    out.write_bytes(bytes(tail))
    print(f"{out}: {len(tail)} bytes, sha256 {hashlib.sha256(tail).hexdigest()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
