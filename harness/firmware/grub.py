"""Where GRUB sits in an AmdSev firmware: the FFS file ``gGrubFileGuid`` and its PE32."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from harness.errors import FirmwareFormatError
from harness.firmware import guids
from harness.firmware.fv import FfsFile, FirmwareVolume, SectionType
from harness.firmware.pe import PeInfo, inspect_pe


@dataclass(frozen=True)
class GrubLocation:
    volume: FirmwareVolume
    file: FfsFile
    pe: PeInfo
    pe_sha256: str


def find_grub(volumes: list[FirmwareVolume]) -> GrubLocation | None:
    """Find the GRUB file (``gGrubFileGuid``) and check its PE32 section.

    Raises:
        FirmwareFormatError: the GRUB file exists but holds no PE32 section, or the
            section is not a PE image.
    """
    for top in volumes:
        for volume, ffs in top.walk():
            if ffs.guid != guids.GRUB_FILE:
                continue
            section = ffs.first(SectionType.PE32)
            if section is None:
                raise FirmwareFormatError(f"The GRUB file {guids.GRUB_FILE} has no PE32 section.")
            digest = hashlib.sha256(section.data).hexdigest()
            return GrubLocation(volume, ffs, inspect_pe(section.data), digest)
    return None
