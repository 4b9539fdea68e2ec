"""Build OVMF (OvmfPkg/AmdSev/AmdSevX64.dsc) with our GRUB inside, in the builder
container, and write ``out/ovmf/OVMF.fd`` with its manifest."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from harness.components import grub
from harness.components.pipeline import (
    BUILD_LOG,
    MANIFEST,
    Built,
    Finished,
    Manifest,
    Request,
    Role,
    Spec,
    Style,
    build,
)
from harness.components.workspace import Component, Workspace
from harness.errors import InfrastructureError
from harness.firmware.fv import find_volumes, read_firmware
from harness.firmware.grub import find_grub
from harness.firmware.guids import GRUB_FILE
from harness.firmware.guidtable import MemoryBlock, parse_guid_table
from harness.host import containers
from harness.sev.measure import launch_digest
from harness.upstream import style

log = logging.getLogger(__name__)

DSC = "OvmfPkg/AmdSev/AmdSevX64.dsc"
# grub.sh keeps an existing grub.efi that is newer than grub.cfg and grub.sh, which
# would hide a changed GRUB: always remove it first.
SCRIPT = r"""
set -eu
export HOME=/tmp PATH=/opt/grub/bin:$PATH
cd /src
# No SOURCE_DATE_EPOCH: grub.sh (patches/ovmf 0002) dates the GRUB memdisk's files at
# its own default, so this build and one typed by hand give the same image.
rm -f OvmfPkg/AmdSev/Grub/grub.efi
echo "== BaseTools"; make -C BaseTools/Source/C -j"$(nproc)" >/dev/null
set +u; . ./edksetup.sh >/dev/null; set -u
# GCC5 where the tree still defines it (our pin), else GCC: edk2 removed the deprecated
# GCC5 in bdadb269e3 (2026-02-26, first in edk2-stable202605).
tag=GCC5
grep -q '^DEFINE GCC5_X64_PREFIX' BaseTools/Conf/tools_def.template || tag=GCC
echo "== build $TARGET ($tag)"
build -a X64 -t "$tag" -b "$TARGET" -n "$(nproc)" -p OvmfPkg/AmdSev/AmdSevX64.dsc $EXTRA
cp "Build/AmdSev/${TARGET}_${tag}/FV/OVMF.fd" /out/OVMF.fd
{ gcc --version | head -n1; nasm -v; iasl -v 2>/dev/null | grep -m1 -i version || true;
  python3 --version; grub-mkimage --version; } > /out/toolchain.txt
"""
PROGRESS = re.compile(r"(?:^== (.+)|^Building \.\.\. (\S+)|^(GenFds|Generate Region)\b)")


SCHEMA: Final = "harness-ovmf-manifest/2"


@dataclass(frozen=True)
class Area:
    """A guest-physical memory block the firmware reserves."""

    gpa: int
    size: int


@dataclass(frozen=True)
class OvmfOutput:
    """The firmware image and what the guest owner and the boots rely on."""

    file: str
    sha256: str
    size: int
    sev_launch_digest: str
    secret_area: Area | None
    hash_table_area: Area | None
    grub_pe_sha256: str
    grub_modules: tuple[str, ...]


@dataclass(frozen=True)
class OvmfManifest(Manifest):
    """``manifest.json`` of an OVMF build (``harness-ovmf-manifest/2``)."""

    schema: Literal["harness-ovmf-manifest/2"]
    output: OvmfOutput

    @property
    def launch_digest(self) -> bytes:
        return bytes.fromhex(self.output.sev_launch_digest)


#: A finished OVMF build.
OvmfBuild = Built[OvmfManifest]


def _area(block: MemoryBlock | None) -> Area | None:
    return Area(block.base, block.size) if block is not None and block.present else None


def examine(firmware: Path) -> OvmfOutput:
    """What the manifest says of a built firmware, from the firmware parsers.

    Raises:
        InfrastructureError: it holds no usable GRUB, or a GRUB without efisecret.
    """
    image = read_firmware(firmware)
    table = parse_guid_table(image)
    grub = find_grub(find_volumes(image))
    if grub is None or not grub.pe.ok:
        raise InfrastructureError(f"The built OVMF.fd has no usable GRUB file ({GRUB_FILE}).")
    modules = tuple(m.name for m in grub.pe.grub_modules or ())
    if "efisecret" not in modules:
        raise InfrastructureError("The GRUB inside the built OVMF.fd lacks the efisecret module.")
    return OvmfOutput(
        file=firmware.name,
        sha256=hashlib.sha256(image).hexdigest(),
        size=len(image),
        sev_launch_digest=launch_digest(image).hex(),
        secret_area=_area(table.secret_block if table else None),
        hash_table_area=_area(table.hash_table_block if table else None),
        grub_pe_sha256=grub.pe_sha256,
        grub_modules=modules,
    )


def _manifest(done: Finished) -> OvmfManifest:
    return OvmfManifest(schema=SCHEMA, output=examine(done.entry / FIRMWARE), **done.record())


def _options(request: Request, comp: Component) -> dict[str, Any]:
    target = "DEBUG" if request.debug else "RELEASE"
    return {"target": target, "extra": "-D DEBUG_ON_SERIAL_PORT=TRUE" if request.debug else ""}


def _env(request: Request, builder: containers.BuilderImage, comp: Component) -> dict[str, str]:
    options = _options(request, comp)
    return {"TARGET": options["target"], "EXTRA": options["extra"]}


FIRMWARE = "OVMF.fd"
SPEC = Spec(
    name="ovmf",
    builder="bookworm",
    script=SCRIPT,
    progress=PROGRESS,
    role=Role.FIRMWARE,
    style=Style("BaseTools/Scripts/PatchCheck.py", style.edk2_patchcheck),
    manifest=_manifest,
    manifest_type=OvmfManifest,
    publish=(FIRMWARE, MANIFEST, BUILD_LOG),
    depends=(grub.SPEC,),
    dep_mounts=(("grub", grub.PREFIX.lstrip("/"), grub.PREFIX),),
    options=_options,
    env=_env,
)


def firmware(built: Built[OvmfManifest]) -> Path:
    """The published firmware image of a build."""
    return built.published / FIRMWARE


def build_ovmf(
    ws: Workspace,
    *,
    debug: bool = False,
    tree_edk2: Path | None = None,
    tree_grub: Path | None = None,
    apply_series: bool = True,
) -> Built[OvmfManifest]:
    """GRUB if needed, then AmdSevX64 with that GRUB; both published in the workspace.

    Raises:
        PatchError, ChecksumError, CommandError, InfrastructureError.
    """
    trees = {n: t for n, t in (("ovmf", tree_edk2), ("grub", tree_grub)) if t is not None}
    return build(SPEC, ws, Request(trees, apply_series, debug))
