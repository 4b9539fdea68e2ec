"""A simulated SEV secure element (the platform side), for hosts without SEV.

This is a FAKE of a protocol layer that cannot exist on a non-SEV host: it stands in
for AMD's PSP. It does what the PSP does with the bytes (hash what is launched, answer
LAUNCH_MEASURE with a fresh nonce, check and decrypt LAUNCH_SECRET) but provides none
of its isolation: the keys live in this process.

It is written apart from the guest owner's code on purpose and imports none of it
(``harness.sev.measure``, ``packet``, ``secret``, ``owner``, ``policy``; a unit test
checks this): the measurement, the packet MAC, AES-CTR and the kernel-hashes table are
computed here a second time, from the AMD SEV API and QEMU's ``target/i386/sev.c``. A
bug on either side then shows in every simulated boot instead of cancelling out. Its
interface is the one QMP gives a host: LAUNCH_MEASURE comes back as base64, and
LAUNCH_SECRET takes the packet header and payload as bytes.

The platform around it (the PDH key pair, its certificate chain, LAUNCH_START with the
owner's GODH certificate and session) is ``simplatform.py``, written on the same terms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import uuid
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.errors import ConfigError, SecretFormatError, VerificationError

#: AMD SEV API, LAUNCH_MEASURE: the context byte that starts the HMAC'd message.
MEASURE_CONTEXT = b"\x04"
#: AMD SEV API, LAUNCH_SECRET: the context byte of the packet MAC.
SECRET_CONTEXT = b"\x01"
NONCE_BYTES = 16
#: LAUNCH_SECRET header: FLAGS u32, IV[16], MAC[32].
SECRET_HEADER = struct.Struct("<L16s32s")

# QEMU target/i386/sev.c: the SEV_HASH_TABLE GUIDs, in the order QEMU writes them.
HASHES_HEADER = uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
HASHES_CMDLINE = uuid.UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
HASHES_INITRD = uuid.UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
HASHES_KERNEL = uuid.UUID("4de79437-abd2-427f-b835-d5b172d2045b")


class Keys(Protocol):
    """The transport keys the element shares with the owner (TEK encrypts, TIK MACs)."""

    @property
    def tek(self) -> bytes: ...

    @property
    def tik(self) -> bytes: ...


class Platform(Protocol):
    """What the platform reports and binds into the measurement."""

    @property
    def api_major(self) -> int: ...

    @property
    def api_minor(self) -> int: ...

    @property
    def build(self) -> int: ...

    @property
    def policy(self) -> int: ...


def measure_hmac(tik: bytes, platform: Platform, digest: bytes, nonce: bytes) -> bytes:
    """LAUNCH_MEASURE: HMAC-SHA256 under the TIK of the context, the platform's version,
    build and policy, the launch digest and the nonce."""
    message = bytearray(MEASURE_CONTEXT)
    message += bytes((platform.api_major, platform.api_minor, platform.build))
    message += platform.policy.to_bytes(4, "little")
    message += digest + nonce
    return hmac.digest(tik, bytes(message), "sha256")


def secret_mac(tik: bytes, flags: int, iv: bytes, ciphertext: bytes, measurement: bytes) -> bytes:
    """LAUNCH_SECRET's MAC: guest and transport lengths are both the ciphertext's."""
    size = len(ciphertext).to_bytes(4, "little")
    message = SECRET_CONTEXT + flags.to_bytes(4, "little") + iv + size + size
    return hmac.digest(tik, message + ciphertext + measurement, "sha256")


def aes_ctr(key: bytes, counter: bytes, data: bytes) -> bytes:
    """AES-128 in counter mode, the whole 16-byte block counting (big-endian)."""
    if len(key) != 16 or len(counter) != 16:
        raise ConfigError("AES-128-CTR takes a 16-byte key and a 16-byte counter block.")
    encrypt = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    start = int.from_bytes(counter, "big")
    blocks = (len(data) + 15) // 16
    stream = encrypt.update(
        b"".join(((start + i) % (1 << 128)).to_bytes(16, "big") for i in range(blocks))
    )
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def kernel_hashes(kernel: bytes, initrd: bytes | None, cmdline: str | None) -> bytes:
    """The table QEMU puts in the firmware's hash page for a measured direct boot.

    ``{GUID; u16 len; entries}``, each entry ``{GUID; u16 len (50); SHA-256}``: command
    line (with its NUL), initrd (empty when absent), kernel; padded to 16 bytes.
    """
    rows = (
        (HASHES_CMDLINE, (cmdline or "").encode() + b"\0"),
        (HASHES_INITRD, initrd or b""),
        (HASHES_KERNEL, kernel),
    )
    body = b"".join(
        guid.bytes_le + (16 + 2 + 32).to_bytes(2, "little") + hashlib.sha256(data).digest()
        for guid, data in rows
    )
    table = HASHES_HEADER.bytes_le + (16 + 2 + len(body)).to_bytes(2, "little") + body
    return table.ljust(-(-len(table) // 16) * 16, b"\0")


class SimulatedSecureElement:
    """One simulated launch: update data, measure, then accept secrets.

    Usage::

        psp = SimulatedSecureElement(keys, platform)
        psp.launch_update_data(firmware)
        measure_b64 = psp.launch_measure()       # as QMP query-sev-launch-measure
        table = psp.launch_secret(header, payload)  # VerificationError on a bad MAC
    """

    def __init__(self, keys: Keys, platform: Platform) -> None:
        self._tek = bytes(keys.tek)
        self._tik = bytes(keys.tik)
        self._platform = platform
        self._digest = hashlib.sha256()
        self._measurement: bytes | None = None
        self._answer = ""

    def __repr__(self) -> str:  # never print key material
        return "SimulatedSecureElement(<keys redacted>)"

    def launch_update_data(self, data: bytes) -> None:
        """Measure *data* into the launch digest (firmware, then any hash table)."""
        if self._measurement is not None:
            raise ConfigError("The launch was already measured; no more data can be added.")
        self._digest.update(data)

    def launch_update_kernel_hashes(
        self, kernel: bytes, initrd: bytes | None, cmdline: str | None
    ) -> bytes:
        """Measure the kernel-hashes table QEMU would write; returns the table."""
        table = kernel_hashes(kernel, initrd, cmdline)
        self.launch_update_data(table)
        return table

    def launch_measure(self, mnonce: bytes | None = None) -> str:
        """Finish the digest; base64 of MEASUREMENT || MNONCE (a fresh nonce by default).

        Asked again, it gives the same answer.
        """
        if self._measurement is None:
            nonce = os.urandom(NONCE_BYTES) if mnonce is None else mnonce
            if len(nonce) != NONCE_BYTES:
                raise ConfigError("The LAUNCH_MEASURE nonce is 16 bytes.")
            digest = self._digest.digest()
            self._measurement = measure_hmac(self._tik, self._platform, digest, nonce)
            self._answer = base64.b64encode(self._measurement + nonce).decode()
        return self._answer

    def launch_secret(self, header: bytes, payload: bytes) -> bytes:
        """Check a LAUNCH_SECRET packet against this launch's measurement; decrypt it.

        Raises:
            ConfigError: called before launch_measure.
            SecretFormatError: a malformed header or payload, or FLAGS other than 0.
            VerificationError: the MAC does not verify.
        """
        if self._measurement is None:
            raise ConfigError("LAUNCH_SECRET needs LAUNCH_MEASURE first.")
        return open_secret(self._tek, self._tik, header, payload, self._measurement)


def open_secret(tek: bytes, tik: bytes, header: bytes, payload: bytes, measurement: bytes) -> bytes:
    """What the element does with a LAUNCH_SECRET packet bound to *measurement*.

    Raises:
        SecretFormatError: a malformed header or payload, or FLAGS other than 0.
        VerificationError: the MAC does not verify.
    """
    if len(header) != SECRET_HEADER.size:
        raise SecretFormatError(f"LAUNCH_SECRET: a {len(header)}-byte header; it is 52 bytes.")
    if not payload or len(payload) % 16:
        raise SecretFormatError(
            f"LAUNCH_SECRET: a {len(payload)}-byte payload; it is a non-empty multiple of 16."
        )
    flags, iv, mac = SECRET_HEADER.unpack(header)
    if flags:
        raise SecretFormatError(f"LAUNCH_SECRET: FLAGS {flags:#x} refused; only 0 is accepted.")
    if not hmac.compare_digest(secret_mac(tik, flags, iv, payload, measurement), mac):
        raise VerificationError("LAUNCH_SECRET: the packet's MAC does not verify; refused.")
    return aes_ctr(tek, iv, payload)
