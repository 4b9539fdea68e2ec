"""The SEV-SNP launch digest: the MEASUREMENT an SNP attestation report carries.

AMD SEV-SNP firmware ABI (publication 56860), SNP_LAUNCH_UPDATE: every page the
hypervisor adds extends the digest::

    DIGEST_NEW = SHA-384(PAGE_INFO)      PAGE_INFO.DIGEST_CUR = DIGEST_OLD (first: 0)

where PAGE_INFO.CONTENTS is SHA-384 of the page for normal and VMSA pages, and zero
for zero, unmeasured, secrets and CPUID pages, whose contents the PSP fills in.

Under QEMU the pages come in this order: the whole firmware image (mapped to end at
4 GiB), then the sections the firmware's ``ASEV`` metadata lists, in its order (zero
pages for SNP_SEC_MEM and SVSM_CAA, the secrets page, the CPUID page, the kernel-hashes
page or zero pages), then one VMSA page per vCPU. This is a model for checking an
expected measurement, not a launch.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from harness.errors import ConfigError, FirmwareFormatError
from harness.firmware.guidtable import (
    SevMetadata,
    SevMetadataSection,
    SevSectionType,
    parse_guid_table,
    parse_sev_metadata,
)
from harness.sev.measure import check_hash_table_fits, kernel_hashes_table
from harness.sev.vmsa import PAGE_SIZE, VcpuConfig, VmsaModel, vmsa_pages

DIGEST_SIZE = 48
ZERO_DIGEST = bytes(DIGEST_SIZE)
FOUR_GIB = 1 << 32
#: The GPA the RMP records for a VMSA page: (u64)-1, page-aligned, bits 52-63 clear.
VMSA_GPA = 0xFFFFFFFFF000


class PageType(enum.IntEnum):
    """``PAGE_TYPE`` of SNP_LAUNCH_UPDATE."""

    NORMAL = 1
    VMSA = 2
    ZERO = 3
    UNMEASURED = 4
    SECRETS = 5
    CPUID = 6


@dataclass(frozen=True)
class PageInfo:
    """``PAGE_INFO`` (SNP ABI, SNP_LAUNCH_UPDATE)::

    BYTE  DIGEST_CUR[48];
    BYTE  CONTENTS[48];
    UINT16 LENGTH;          // 0x70
    UINT8 PAGE_TYPE;
    UINT8 IMI_PAGE;         // bit 0
    UINT8 VMPL3_PERMS; UINT8 VMPL2_PERMS; UINT8 VMPL1_PERMS;
    UINT8 RESERVED;
    UINT64 GPA;
    """

    digest_cur: bytes
    contents: bytes
    page_type: PageType
    gpa: int
    imi_page: bool = False
    vmpl3_perms: int = 0
    vmpl2_perms: int = 0
    vmpl1_perms: int = 0

    FORMAT = struct.Struct("<48s48sHBBBBBBQ")

    def serialize(self) -> bytes:
        return self.FORMAT.pack(
            self.digest_cur,
            self.contents,
            self.FORMAT.size,
            self.page_type,
            int(self.imi_page),
            self.vmpl3_perms,
            self.vmpl2_perms,
            self.vmpl1_perms,
            0,
            self.gpa,
        )


@dataclass(frozen=True)
class LaunchUpdate:
    """One page as SNP_LAUNCH_UPDATE measures it: type, GPA and CONTENTS."""

    page_type: PageType
    gpa: int
    contents: bytes = ZERO_DIGEST


def extend(digest: bytes, update: LaunchUpdate) -> bytes:
    """The digest after one more page."""
    info = PageInfo(digest, update.contents, update.page_type, update.gpa)
    return hashlib.sha384(info.serialize()).digest()


def _measured_pages(page_type: PageType, gpa: int, data: bytes) -> Iterator[LaunchUpdate]:
    for at in range(0, len(data), PAGE_SIZE):
        page = data[at : at + PAGE_SIZE]
        yield LaunchUpdate(page_type, gpa + at, hashlib.sha384(page).digest())


def _blank_pages(page_type: PageType, gpa: int, size: int) -> Iterator[LaunchUpdate]:
    for at in range(0, size, PAGE_SIZE):
        yield LaunchUpdate(page_type, gpa + at)


def firmware_gpa(firmware: bytes) -> int:
    """Where QEMU maps the image: ending at 4 GiB.

    Raises:
        FirmwareFormatError: not a whole number of pages, or larger than 4 GiB.
    """
    if not firmware or len(firmware) % PAGE_SIZE or len(firmware) > FOUR_GIB:
        raise FirmwareFormatError(
            f"A {len(firmware)}-byte image cannot be launched under SNP: it must be a whole "
            "number of 4 KiB pages below 4 GiB."
        )
    return FOUR_GIB - len(firmware)


def sev_metadata(firmware: bytes) -> SevMetadata:
    """The firmware's ``ASEV`` metadata, which says what SNP must pre-validate.

    Raises:
        FirmwareFormatError: no GUID table or no SEV metadata (not an SNP-capable OVMF).
    """
    table = parse_guid_table(firmware)
    meta = None if table is None else parse_sev_metadata(firmware, table)
    if meta is None:
        raise FirmwareFormatError(
            "This firmware has no SEV metadata (ASEV), so it cannot boot as an SNP guest.",
            hint="OvmfPkgX64 since edk2 2022.02 and AmdSevX64 carry it",
        )
    return meta


def kernel_hashes_page(firmware: bytes, table: bytes) -> bytes:
    """The page QEMU fills with the kernel-hashes table, at the hash block's offset.

    Raises:
        FirmwareFormatError: no hash table block, or the table overflows its page.
    """
    block = check_hash_table_fits(firmware, len(table))
    offset = block.base % PAGE_SIZE
    if offset + len(table) > PAGE_SIZE:
        raise FirmwareFormatError(
            f"The kernel hashes table at page offset {offset:#x} runs past its page."
        )
    return bytes(offset) + table + bytes(PAGE_SIZE - offset - len(table))


def _section_pages(
    section: SevMetadataSection, hashes_page: bytes | None
) -> Iterator[LaunchUpdate]:
    if section.gpa % PAGE_SIZE or section.size % PAGE_SIZE or not section.size:
        raise FirmwareFormatError(
            f"The SEV metadata section {section.type_name} at {section.gpa:#x} "
            f"({section.size:#x} bytes) is not whole pages."
        )
    match section.type:
        case SevSectionType.SNP_SEC_MEM | SevSectionType.SVSM_CAA:
            yield from _blank_pages(PageType.ZERO, section.gpa, section.size)
        case SevSectionType.SNP_SECRETS:
            yield LaunchUpdate(PageType.SECRETS, section.gpa)
        case SevSectionType.CPUID:
            yield LaunchUpdate(PageType.CPUID, section.gpa)
        case SevSectionType.SNP_KERNEL_HASHES if hashes_page is None:
            yield from _blank_pages(PageType.ZERO, section.gpa, section.size)
        case SevSectionType.SNP_KERNEL_HASHES if hashes_page is not None:
            if section.size != PAGE_SIZE:
                raise FirmwareFormatError(
                    f"The SNP kernel hashes section is {section.size:#x} bytes; QEMU fills "
                    "exactly one page."
                )
            yield from _measured_pages(PageType.NORMAL, section.gpa, hashes_page)
        case _:
            raise FirmwareFormatError(
                f"The SEV metadata lists a section of unknown type {section.type:#x} at "
                f"{section.gpa:#x}; its SNP measurement is unknown."
            )


def launch_updates(
    firmware: bytes,
    vcpus: VcpuConfig,
    kernel: bytes | None = None,
    initrd: bytes | None = None,
    cmdline: str | None = None,
) -> Iterator[LaunchUpdate]:
    """The pages of an SNP launch under QEMU, in order.

    Raises:
        ConfigError: the legacy VMSA model, or an initrd/cmdline without a kernel.
        FirmwareFormatError: see :func:`firmware_gpa`, :func:`sev_metadata`; a kernel
            without an SNP_KERNEL_HASHES section; no SEV-ES reset block for the APs.
    """
    if vcpus.model is VmsaModel.LEGACY:
        raise ConfigError(
            "An SNP guest is always set up with KVM_SEV_INIT2, so its VMSA model is init2, "
            "not legacy."
        )
    if kernel is None and (initrd is not None or cmdline is not None):
        raise ConfigError("An initrd or kernel command line needs a kernel as well.")
    gpa = firmware_gpa(firmware)
    meta = sev_metadata(firmware)
    hashes_page = None
    if kernel is not None:
        if not any(s.type == SevSectionType.SNP_KERNEL_HASHES for s in meta.sections):
            raise FirmwareFormatError(
                "This firmware's SEV metadata has no SNP_KERNEL_HASHES section, so it cannot "
                "verify a measured direct kernel boot under SNP."
            )
        hashes_page = kernel_hashes_page(firmware, kernel_hashes_table(kernel, initrd, cmdline))
    table = parse_guid_table(firmware)
    ap_eip = None if table is None else table.sev_es_reset_eip
    yield from _measured_pages(PageType.NORMAL, gpa, firmware)
    for section in meta.sections:
        yield from _section_pages(section, hashes_page)
    for page in vmsa_pages(ap_eip, vcpus, snp=True):
        yield LaunchUpdate(PageType.VMSA, VMSA_GPA, hashlib.sha384(page).digest())


def snp_launch_digest(
    firmware: bytes,
    vcpus: VcpuConfig,
    kernel: bytes | None = None,
    initrd: bytes | None = None,
    cmdline: str | None = None,
) -> bytes:
    """The 48-byte SNP launch digest (MEASUREMENT) of a QEMU launch of *firmware*.

    Raises:
        ConfigError, FirmwareFormatError: as :func:`launch_updates`.
    """
    digest = ZERO_DIGEST
    for update in launch_updates(firmware, vcpus, kernel, initrd, cmdline):
        digest = extend(digest, update)
    return digest
