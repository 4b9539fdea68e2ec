"""LUKS payload encryption without dm-crypt: AES-XTS with the plain64 IV.

dm-crypt's ``aes-xts-plain64`` encrypts each sector on its own, the XTS tweak being
the sector number (counted from the start of the payload) as a 16-byte little-endian
integer. With that, an ext4 image can be encrypted in userspace and written after a
header that cryptsetup formatted on a plain file.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.errors import InputError


def _check(key: bytes, data: bytes, sector_size: int) -> None:
    if len(key) not in (32, 64):
        raise InputError(f"An AES-XTS key is 32 or 64 bytes, not {len(key)}.")
    if len(data) % sector_size:
        raise InputError(f"The data is not a whole number of {sector_size}-byte sectors.")


def encrypt(key: bytes, data: bytes, sector_size: int = 512, first_sector: int = 0) -> bytes:
    """Encrypt *data* sector by sector as dm-crypt's aes-xts-plain64 would."""
    _check(key, data, sector_size)
    return _apply(key, data, sector_size, first_sector, encrypt=True)


def decrypt(key: bytes, data: bytes, sector_size: int = 512, first_sector: int = 0) -> bytes:
    """The inverse of :func:`encrypt`."""
    _check(key, data, sector_size)
    return _apply(key, data, sector_size, first_sector, encrypt=False)


def _apply(key: bytes, data: bytes, sector_size: int, first: int, *, encrypt: bool) -> bytes:
    aes = algorithms.AES(key)
    out = bytearray(len(data))
    view = memoryview(data)
    for i in range(len(data) // sector_size):
        tweak = (first + i).to_bytes(16, "little")
        cipher = Cipher(aes, modes.XTS(tweak))
        ctx = cipher.encryptor() if encrypt else cipher.decryptor()
        start = i * sector_size
        out[start : start + sector_size] = ctx.update(view[start : start + sector_size])
    return bytes(out)
