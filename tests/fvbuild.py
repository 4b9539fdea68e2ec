"""A minimal firmware-volume writer for tests (PI spec vol. 3 layouts).

Used to put a real grub-mkimage output into an FFS file inside an FV, with and without
LZMA compression, so the GRUB locator can be exercised before the harness builds
AmdSev images. Its output is cross-checked against uefi_firmware, an independent parser.
"""

from __future__ import annotations

import lzma
import struct
import uuid

from harness.firmware import guids

FFS2 = guids.EFI_FIRMWARE_FILE_SYSTEM2
ERASE_POLARITY = 0x00000800
FV_ATTRIBUTES = 0x0004FEFF  # the usual OVMF set, erase polarity 1


def section(stype: int, body: bytes) -> bytes:
    size = 4 + len(body)
    return size.to_bytes(3, "little") + bytes([stype]) + body


def ui_section(name: str) -> bytes:
    return section(0x15, (name + "\0").encode("utf-16-le"))


def lzma_section(sections: bytes) -> bytes:
    """A GUID-defined LZMA section holding *sections*, as edk2's LzmaCompress writes it."""
    raw = lzma.compress(
        sections,
        format=lzma.FORMAT_ALONE,
        filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 20}],
    )
    # FORMAT_ALONE writes an unknown size (all ones); edk2 stores the real one.
    payload = raw[:5] + struct.pack("<Q", len(sections)) + raw[13:]
    header = guids.LZMA_CUSTOM_DECOMPRESS.bytes_le + struct.pack("<HH", 4 + 20, 0x01)
    return section(0x02, header + payload)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def sections_of(*items: bytes) -> bytes:
    return b"".join(_pad4(s) for s in items[:-1]) + items[-1]


def ffs_file(guid: uuid.UUID, ftype: int, body: bytes) -> bytes:
    size = 24 + len(body)
    header = bytearray(
        guid.bytes_le + b"\0\0" + bytes([ftype, 0]) + size.to_bytes(3, "little") + b"\0"
    )
    header[16] = (-sum(header[:16] + header[18:23])) & 0xFF
    header[17] = 0xAA  # no file checksum
    header[23] = 0xF8  # EFI_FILE_HEADER_CONSTRUCTION|VALID|DATA_VALID, inverted polarity
    return bytes(header) + body


def volume(*files: bytes, length: int | None = None) -> bytes:
    """An FFS2 volume with *files*, 8-aligned, filled with 0xFF to *length*."""
    hlen = 56 + 16  # header + block map {n, size} + terminator
    body = b""
    for f in files:
        body += f + b"\xff" * (-len(f) % 8)
    total = hlen + len(body)
    length = length or ((total + 0xFFF) & ~0xFFF)
    header = bytearray(
        struct.pack(
            "<16s16sQ4sIHHHBB",
            bytes(16),
            FFS2.bytes_le,
            length,
            b"_FVH",
            FV_ATTRIBUTES,
            hlen,
            0,
            0,
            0,
            2,
        )
        + struct.pack("<IIII", length // 0x1000, 0x1000, 0, 0)
    )
    checksum = (-sum(struct.unpack(f"<{hlen // 2}H", header))) & 0xFFFF
    struct.pack_into("<H", header, 50, checksum)
    return bytes(header) + body + b"\xff" * (length - total)
