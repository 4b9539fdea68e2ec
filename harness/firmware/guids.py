"""Every GUID the harness knows, with a name table for display.

GUIDs are stored as :class:`uuid.UUID`; on disk EFI uses the mixed-endian layout, so
convert with ``uuid.UUID(bytes_le=...)`` and ``guid.bytes_le``.
Sources: edk2 ``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm``, ``OvmfPkg/OvmfPkg.dec``,
``MdePkg/MdePkg.dec``, QEMU ``docs/specs/sev-guest-firmware.rst``, Linux
``drivers/virt/coco/efi_secret``.
"""

from __future__ import annotations

from uuid import UUID

# Reset-vector GUID table (OvmfPkg/ResetVector).
OVMF_TABLE_FOOTER = UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
SEV_SECRET_BLOCK = UUID("4c2eb361-7d9b-4cc3-8081-127c90d3d294")
SEV_HASH_TABLE_BLOCK = UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
SEV_ES_RESET_BLOCK = UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
SEV_METADATA_OFFSET = UUID("dc886566-984a-4798-a75e-5585a7bf67cc")
TDX_METADATA_OFFSET = UUID("e47a6535-984a-4798-865e-4685a7bf8ec2")
#: edk2 2025 (OvmfPkg/igvm): offset from the end of the image of the ``IGVM`` parameter
#: and HOB region descriptor.
IGVM_METADATA_OFFSET = UUID("784fa70e-3176-4677-8a20-04b68699e374")
SVSM_INFO = UUID("a789a612-0597-4c4b-a49f-cbb1fe9d1ddd")

# SEV kernel-hashes table (OvmfPkg/AmdSev/BlobVerifierLib, QEMU target/i386/sev.c).
SEV_HASH_TABLE_HEADER = UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
SEV_KERNEL_ENTRY = UUID("4de79437-abd2-427f-b835-d5b172d2045b")
SEV_INITRD_ENTRY = UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
SEV_CMDLINE_ENTRY = UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")

# EFI secret area (OvmfPkg SecretDxe, Linux efi_secret, sevctl).
SEV_LAUNCH_SECRET_TABLE = UUID("adf956ad-e98c-484c-ae11-b51c7d336447")
EFI_SECRET_TABLE_HEADER = UUID("1e74f542-71dd-4d66-963e-ef4287ff173b")
DISK_PASSPHRASE_ENTRY = UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
# The harness's own entries: secrets beside the passphrase that the guest must keep
# (harness.boots.extras), and the one the owner asks Linux to remove (harness.guest.report).
HARNESS_EXTRA_ENTRIES = (
    UUID("b2f94a13-42c5-4f6c-9d6b-6c4f7e1a0c55"),
    UUID("5e0b7c2d-8a41-4f39-b6d2-0c9e1f7a3b84"),
    UUID("c7a1e94f-2d6b-4b80-9f35-7e8d0a6c21f9"),
)
REMOVE_SECRET_ENTRY = UUID("9d1c6a0e-5b7f-4e21-8a3c-2f6e4b8d7c10")
#: The owner's fresh nonce for this launch, which the root answers (harness.guest.proof).
PROOF_NONCE_ENTRY = UUID("39f77448-612f-4609-a060-40f7e48589bf")

# Firmware volumes and files (MdePkg PiFirmwareVolume.h, OvmfPkg).
EFI_FIRMWARE_FILE_SYSTEM2 = UUID("8c8ce578-8a3d-4f1c-9935-896185c32dd3")
EFI_FIRMWARE_FILE_SYSTEM3 = UUID("5473c07a-3dcb-4dca-bd6f-1e9689e7349a")
EFI_SYSTEM_NV_DATA_FV = UUID("fff12b8d-7696-4c8b-a985-2747075b4f50")
GRUB_FILE = UUID("b5ae312c-bc8a-43b1-9c62-ebb826dd5d07")

# GUID-defined section processors (MdeModulePkg, MdePkg).
LZMA_CUSTOM_DECOMPRESS = UUID("ee4e5898-3914-4259-9d6e-dc7bd79403cf")
LZMAF86_CUSTOM_DECOMPRESS = UUID("d42ae6bd-1352-4bfb-909a-ca72a6eae889")
TIANO_CUSTOM_DECOMPRESS = UUID("a31280ad-481e-41b6-95e8-127f4c984779")
BROTLI_CUSTOM_DECOMPRESS = UUID("3d532050-5cda-4fd0-879e-0f7f630d5afb")
CRC32_GUIDED_SECTION = UUID("fc1bcdb0-7d31-49aa-936a-a4600d9dd083")

NAMES: dict[UUID, str] = {
    OVMF_TABLE_FOOTER: "OVMF GUID table footer",
    SEV_SECRET_BLOCK: "SEV secret block",
    SEV_HASH_TABLE_BLOCK: "SEV hash table block",
    SEV_ES_RESET_BLOCK: "SEV-ES reset block",
    SEV_METADATA_OFFSET: "SEV metadata offset",
    TDX_METADATA_OFFSET: "TDX metadata offset",
    IGVM_METADATA_OFFSET: "IGVM metadata offset",
    SVSM_INFO: "SVSM information",
    SEV_HASH_TABLE_HEADER: "SEV kernel hashes table",
    SEV_KERNEL_ENTRY: "SEV kernel hash",
    SEV_INITRD_ENTRY: "SEV initrd hash",
    SEV_CMDLINE_ENTRY: "SEV cmdline hash",
    SEV_LAUNCH_SECRET_TABLE: "SEV launch secret configuration table",
    EFI_SECRET_TABLE_HEADER: "EFI secret table header",
    DISK_PASSPHRASE_ENTRY: "disk passphrase",
    **{g: f"harness extra secret {n}" for n, g in enumerate(HARNESS_EXTRA_ENTRIES, 1)},
    REMOVE_SECRET_ENTRY: "secret the guest removes",
    PROOF_NONCE_ENTRY: "the owner's nonce for the root's proof",
    EFI_FIRMWARE_FILE_SYSTEM2: "EFI_FIRMWARE_FILE_SYSTEM2",
    EFI_FIRMWARE_FILE_SYSTEM3: "EFI_FIRMWARE_FILE_SYSTEM3",
    EFI_SYSTEM_NV_DATA_FV: "EFI_SYSTEM_NV_DATA_FV (variable store)",
    GRUB_FILE: "GRUB (gGrubFileGuid)",
    LZMA_CUSTOM_DECOMPRESS: "LZMA compressed",
    LZMAF86_CUSTOM_DECOMPRESS: "LZMA+x86 compressed",
    TIANO_CUSTOM_DECOMPRESS: "Tiano compressed",
    BROTLI_CUSTOM_DECOMPRESS: "Brotli compressed",
    CRC32_GUIDED_SECTION: "CRC32 guided",
}


def name_of(guid: UUID) -> str | None:
    """Return the display name of *guid*, or None when it is not one we know."""
    return NAMES.get(guid)


def from_le(raw: bytes) -> UUID:
    """Decode a 16-byte EFI (mixed-endian) GUID."""
    return UUID(bytes_le=bytes(raw))
