"""SEV and SEV-ES launch digests and the launch measurement.

* Launch digest (what LAUNCH_UPDATE_DATA hashes for a plain SEV guest under QEMU):
  SHA-256 over the firmware image, followed by the padded kernel-hashes table when
  QEMU measures a direct kernel boot (``kernel-hashes=on``).
* SEV-ES: the same, followed by LAUNCH_UPDATE_VMSA's 4096-byte VMSA page per vCPU
  (see :mod:`harness.sev.vmsa`). The measurement formula below is unchanged.
* Launch measurement (AMD SEV API, LAUNCH_MEASURE)::

      HMAC-SHA256(TIK, 0x04 || API_MAJOR u8 || API_MINOR u8 || BUILD u8 ||
                  POLICY u32le || DIGEST[32] || MNONCE[16])

  QMP's ``query-sev-launch-measure`` returns base64(MEASUREMENT[32] || MNONCE[16]).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

from harness.errors import ConfigError, FirmwareFormatError, InputError, VerificationError
from harness.firmware import guids
from harness.firmware.guidtable import MemoryBlock, parse_guid_table
from harness.sev.policy import LaunchRules
from harness.sev.vmsa import VcpuConfig, vmsa_pages

MEASUREMENT_CONTEXT = 0x04
MNONCE_SIZE = 16
MEASUREMENT_SIZE = 32
TIK_SIZE = 16
#: The owner's default: a guest that cannot be debugged, on any platform version.
STRICT = LaunchRules()

#: ``SEV_HASH_TABLE { GUID Guid; UINT16 Len; SEV_HASH_TABLE_ENTRY Entries[]; }``
HASH_TABLE_HEADER = struct.Struct("<16sH")
#: ``SEV_HASH_TABLE_ENTRY { GUID Guid; UINT16 Len; UINT8 Hash[32]; }``
HASH_TABLE_ENTRY = struct.Struct("<16sH32s")


def kernel_hashes_table(kernel: bytes, initrd: bytes | None, cmdline: str | None) -> bytes:
    """Build the kernel-hashes table QEMU writes into the firmware's hash page.

    The command line is hashed with its terminating NUL (as the guest sees it); a
    missing initrd hashes as empty. The table is zero-padded to a multiple of 16 bytes,
    which is what QEMU measures.
    """
    entries = [
        (guids.SEV_CMDLINE_ENTRY, hashlib.sha256((cmdline or "").encode() + b"\0").digest()),
        (guids.SEV_INITRD_ENTRY, hashlib.sha256(initrd or b"").digest()),
        (guids.SEV_KERNEL_ENTRY, hashlib.sha256(kernel).digest()),
    ]
    length = HASH_TABLE_HEADER.size + len(entries) * HASH_TABLE_ENTRY.size
    table = HASH_TABLE_HEADER.pack(guids.SEV_HASH_TABLE_HEADER.bytes_le, length)
    for guid, digest in entries:
        table += HASH_TABLE_ENTRY.pack(guid.bytes_le, HASH_TABLE_ENTRY.size, digest)
    return table + bytes(-len(table) % 16)


def launch_digest(
    firmware: bytes,
    kernel: bytes | None = None,
    initrd: bytes | None = None,
    cmdline: str | None = None,
) -> bytes:
    """The SEV launch digest of *firmware*, with a measured direct kernel boot if given.

    Raises:
        ConfigError: initrd or cmdline given without a kernel.
        FirmwareFormatError: a kernel is given but the firmware reserves no hash table
            block, or the table would not fit in it.
    """
    return _launch_hash(firmware, kernel, initrd, cmdline).digest()


def seves_launch_digest(
    firmware: bytes,
    vcpus: VcpuConfig,
    kernel: bytes | None = None,
    initrd: bytes | None = None,
    cmdline: str | None = None,
) -> bytes:
    """The SEV-ES launch digest: the SEV digest's input, then one VMSA page per vCPU
    (LAUNCH_UPDATE_VMSA, boot CPU first).

    Raises:
        ConfigError: initrd or cmdline given without a kernel.
        FirmwareFormatError: not an OVMF image with a GUID table, more than one vCPU
            without an SEV-ES reset block, or a kernel the firmware cannot measure.
    """
    h = _launch_hash(firmware, kernel, initrd, cmdline)
    for page in vmsa_pages(ap_reset_eip(firmware), vcpus):
        h.update(page)
    return h.digest()


def ap_reset_eip(firmware: bytes) -> int | None:
    """The firmware's SEV-ES reset address (None: no reset block).

    Raises:
        FirmwareFormatError: the image has no reset-vector GUID table at all.
    """
    table = parse_guid_table(firmware)
    if table is None:
        raise FirmwareFormatError(
            "This firmware has no reset-vector GUID table, so the SEV-ES start address "
            "of its vCPUs is unknown.",
            hint="an SEV-ES or SNP guest needs an OVMF image",
        )
    return table.sev_es_reset_eip


def _launch_hash(
    firmware: bytes, kernel: bytes | None, initrd: bytes | None, cmdline: str | None
) -> hashlib._Hash:
    """SHA-256 over the firmware and, for a measured kernel, the kernel-hashes table."""
    h = hashlib.sha256(firmware)
    if kernel is None:
        if initrd is not None or cmdline is not None:
            raise ConfigError("An initrd or kernel command line needs a kernel as well.")
        return h
    table = kernel_hashes_table(kernel, initrd, cmdline)
    check_hash_table_fits(firmware, len(table))
    h.update(table)
    return h


def check_hash_table_fits(firmware: bytes, table_size: int) -> MemoryBlock:
    """The firmware's SEV hash table block, checked to hold a *table_size*-byte table.

    Raises:
        FirmwareFormatError: no block (stock OVMF), or one too small.
    """
    gt = parse_guid_table(firmware)
    block = gt.hash_table_block if gt is not None else None
    if block is None or not block.present:
        raise FirmwareFormatError(
            "This firmware reserves no SEV hash table block, so it cannot verify a measured "
            "direct kernel boot.",
            hint="build OvmfPkg/AmdSev/AmdSevX64.dsc, which carries one",
        )
    if table_size > block.size:
        raise FirmwareFormatError(
            f"The kernel hashes table ({table_size} bytes) does not fit the firmware's "
            f"{block.size}-byte hash table block."
        )
    return block


@dataclass(frozen=True)
class LaunchMeasure:
    """``MEASUREMENT[32] || MNONCE[16]`` as returned by QMP query-sev-launch-measure."""

    measurement: bytes
    mnonce: bytes

    @classmethod
    def from_base64(cls, text: str) -> LaunchMeasure:
        """Decode QMP's base64 string.

        Raises:
            InputError: not base64, or not 48 bytes.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as err:
            raise InputError("The launch measurement is not valid base64.") from err
        if len(raw) != MEASUREMENT_SIZE + MNONCE_SIZE:
            raise InputError(
                f"The launch measurement decodes to {len(raw)} bytes; it must be 48 "
                "(32-byte measurement and 16-byte nonce)."
            )
        return cls(raw[:MEASUREMENT_SIZE], raw[MEASUREMENT_SIZE:])

    def to_base64(self) -> str:
        return base64.b64encode(self.measurement + self.mnonce).decode()


@dataclass(frozen=True)
class PlatformInfo:
    """What the measurement binds besides the digest: SEV API version, build, policy."""

    api_major: int
    api_minor: int
    build: int
    policy: int

    def __post_init__(self) -> None:
        for name in ("api_major", "api_minor", "build"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise ConfigError(f"{name.replace('_', '-')} must be 0-255, not {value}.")
        if not 0 <= self.policy <= 0xFFFFFFFF:
            raise ConfigError(f"The policy must fit in 32 bits, not {self.policy:#x}.")


def check_tik(tik: bytes) -> None:
    if len(tik) != TIK_SIZE:
        raise InputError(f"A TIK is {TIK_SIZE} bytes; this one is {len(tik)}.")


def measurement(tik: bytes, platform: PlatformInfo, digest: bytes, mnonce: bytes) -> bytes:
    """Compute the LAUNCH_MEASURE HMAC."""
    check_tik(tik)
    if len(digest) != 32 or len(mnonce) != MNONCE_SIZE:
        raise InputError("The launch digest must be 32 bytes and the nonce 16.")
    msg = struct.pack(
        "<BBBBI",
        MEASUREMENT_CONTEXT,
        platform.api_major,
        platform.api_minor,
        platform.build,
        platform.policy,
    )
    return hmac.new(tik, msg + digest + mnonce, hashlib.sha256).digest()


def verify_measurement(
    tik: bytes,
    platform: PlatformInfo,
    digest: bytes,
    measure: LaunchMeasure,
    rules: LaunchRules = STRICT,
) -> None:
    """Check that *platform* is one the owner accepts and *measure* attests *digest* on it.

    The policy and platform are judged first (*rules*: NODBG unless debugging is allowed,
    no reserved bits, minimum API and build); the measurement then proves that the
    platform really launched with them. *digest* must be the one for the policy's mode
    (with the VMSAs when it sets ES: :func:`seves_launch_digest`).

    Raises:
        ConfigError: the policy sets a reserved bit.
        VerificationError: *rules* refuse the policy or platform, or the measurement
            does not match; either way the guest must not get a secret.
    """
    rules.check(platform.policy, (platform.api_major, platform.api_minor), platform.build)
    expected = measurement(tik, platform, digest, measure.mnonce)
    if not hmac.compare_digest(expected, measure.measurement):
        raise VerificationError(
            "The launch measurement does not match this firmware: do not inject a secret.",
            hint="check the firmware file, the TIK, API version, build and policy",
        )
