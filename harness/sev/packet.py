"""The LAUNCH_SECRET packet (AMD SEV API §6.6; sevctl ``secret build``).

Header (52 bytes)::

    FLAGS u32le (0) || IV[16] || MAC[32]

The payload is the padded secret table encrypted with AES-128-CTR under the TEK,
counter block = IV. The MAC binds the ciphertext to this launch's measurement::

    MAC = HMAC-SHA256(TIK, 0x01 || FLAGS u32le || IV || GUEST_LENGTH u32le ||
                      TRANS_LENGTH u32le || CIPHERTEXT || MEASUREMENT[32])

with both lengths equal to the padded length.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.errors import InputError, SecretFormatError, VerificationError

HEADER = struct.Struct("<I16s32s")
#: The only FLAGS value accepted: the SEV API reserves the other bits, and COMPRESSED
#: (bit 0) is not a format this harness builds or reads.
FLAGS = 0
MAC_CONTEXT = 0x01
KEY_SIZE = 16
IV_SIZE = 16


@dataclass(frozen=True)
class TransportKeys:
    """The transport encryption and integrity keys agreed with the secure element."""

    tek: bytes
    tik: bytes

    def __post_init__(self) -> None:
        for name in ("tek", "tik"):
            value = getattr(self, name)
            if len(value) != KEY_SIZE:
                raise InputError(f"A {name.upper()} is {KEY_SIZE} bytes; this one is {len(value)}.")

    def __repr__(self) -> str:  # never print key material
        return "TransportKeys(<redacted>)"

    @classmethod
    def from_tiktek(cls, blob: bytes) -> TransportKeys:
        """Split sev-tool's ``tmp_tk.bin``: TEK first, then TIK."""
        if len(blob) != 2 * KEY_SIZE:
            raise InputError(
                f"A TIK/TEK file holds 32 bytes (TEK then TIK); this one holds {len(blob)}."
            )
        return cls(tek=blob[:KEY_SIZE], tik=blob[KEY_SIZE:])

    @classmethod
    def generate(cls) -> TransportKeys:
        return cls(tek=os.urandom(KEY_SIZE), tik=os.urandom(KEY_SIZE))


@dataclass(frozen=True)
class LaunchSecret:
    """A packet ready for QMP ``sev-inject-launch-secret``."""

    flags: int
    iv: bytes
    mac: bytes
    payload: bytes

    @property
    def header(self) -> bytes:
        return HEADER.pack(self.flags, self.iv, self.mac)

    @classmethod
    def parse(cls, header: bytes, payload: bytes) -> LaunchSecret:
        if len(header) != HEADER.size:
            raise SecretFormatError(
                f"A launch secret header is {HEADER.size} bytes; this one is {len(header)}."
            )
        if not payload or len(payload) % 16:
            raise SecretFormatError(
                f"A launch secret payload is a non-empty multiple of 16 bytes; this one is "
                f"{len(payload)}."
            )
        flags, iv, mac = HEADER.unpack(header)
        check_flags(flags)
        return cls(flags, iv, mac, payload)


def check_flags(flags: int) -> None:
    """Refuse any FLAGS but 0.

    Raises:
        SecretFormatError: naming the flags.
    """
    if flags != FLAGS:
        raise SecretFormatError(
            f"The launch secret header sets FLAGS {flags:#x}; only 0 is accepted (the SEV "
            "API reserves the bits, and COMPRESSED is not built here)."
        )


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return cipher.update(data) + cipher.finalize()


def packet_mac(tik: bytes, flags: int, iv: bytes, ciphertext: bytes, measurement: bytes) -> bytes:
    msg = struct.pack("<BI", MAC_CONTEXT, flags) + iv
    msg += struct.pack("<II", len(ciphertext), len(ciphertext)) + ciphertext + measurement
    return hmac.new(tik, msg, hashlib.sha256).digest()


def build_packet(
    table: bytes,
    keys: TransportKeys,
    measurement: bytes,
    *,
    iv: bytes | None = None,
) -> LaunchSecret:
    """Encrypt and MAC a padded secret table for this launch.

    Args:
        table: the serialized secret table (a multiple of 16 bytes).
        measurement: the 32-byte launch measurement the packet is bound to.
        iv: a fixed IV for known-answer tests; random otherwise.
    """
    if not table or len(table) % 16:
        raise SecretFormatError("The secret table must be padded to a multiple of 16 bytes.")
    if len(measurement) != 32:
        raise InputError("The launch measurement must be 32 bytes.")
    iv = os.urandom(IV_SIZE) if iv is None else iv
    if len(iv) != IV_SIZE:
        raise InputError("The IV must be 16 bytes.")
    ciphertext = _ctr(keys.tek, iv, table)
    return LaunchSecret(
        FLAGS, iv, packet_mac(keys.tik, FLAGS, iv, ciphertext, measurement), ciphertext
    )


def open_packet(packet: LaunchSecret, keys: TransportKeys, measurement: bytes) -> bytes:
    """Check the packet's MAC against *measurement*, then decrypt it.

    Raises:
        SecretFormatError: FLAGS other than 0.
        VerificationError: the MAC does not match (wrong keys, another launch's
            measurement, or a tampered header or payload).
    """
    check_flags(packet.flags)
    expected = packet_mac(keys.tik, packet.flags, packet.iv, packet.payload, measurement)
    if not hmac.compare_digest(expected, packet.mac):
        raise VerificationError("The launch secret's MAC does not verify; it was not injected.")
    return _ctr(keys.tek, packet.iv, packet.payload)
