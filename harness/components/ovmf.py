"""Build OVMF (OvmfPkg/AmdSev/AmdSevX64.dsc) with our GRUB inside, in the builder
container, and write ``out/ovmf/OVMF.fd`` with its manifest."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.components import grub as grub_build
from harness.components.pipeline import (
    BuildCache,
    Component,
    SourceTree,
    Workspace,
    digest,
    prepare_tree,
    run_build,
    work_tree_provenance,
)
from harness.errors import InfrastructureError
from harness.firmware.guids import GRUB_FILE
from harness.host import containers
from harness.inspection import describe

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
echo "== build $TARGET"
build -a X64 -t GCC5 -b "$TARGET" -n "$(nproc)" -p OvmfPkg/AmdSev/AmdSevX64.dsc $EXTRA
cp "Build/AmdSev/${TARGET}_GCC5/FV/OVMF.fd" /out/OVMF.fd
{ gcc --version | head -n1; nasm -v; iasl -v 2>/dev/null | grep -m1 -i version || true;
  python3 --version; grub-mkimage --version; } > /out/toolchain.txt
"""
PROGRESS = re.compile(r"(?:^== (.+)|^Building \.\.\. (\S+)|^(GenFds|Generate Region)\b)")


@dataclass(frozen=True)
class OvmfBuild:
    firmware: Path
    manifest: dict[str, Any]
    cached: bool


def build_ovmf(
    ws: Workspace,
    *,
    debug: bool = False,
    base: str = containers.DEFAULT_BASE,
    tree_edk2: Path | None = None,
    tree_grub: Path | None = None,
    apply_series: bool = True,
) -> OvmfBuild:
    """GRUB if needed, then AmdSevX64 with that GRUB; publish to ``out/ovmf``.

    Raises:
        PatchError, ChecksumError, CommandError, InfrastructureError.
    """
    with ws.locked():
        return _build_ovmf(ws, debug, base, tree_edk2, tree_grub, apply_series)


def _build_ovmf(
    ws: Workspace,
    debug: bool,
    base: str,
    tree_edk2: Path | None,
    tree_grub: Path | None,
    apply_series: bool,
) -> OvmfBuild:
    started = time.monotonic()
    builder = containers.ensure_builder("bookworm", base, ws.root / "cache")
    grub_inputs = grub_build.plan(ws.component("grub"), builder, tree_grub, apply_series)
    comp = ws.component("ovmf")
    target = "DEBUG" if debug else "RELEASE"
    extra = "-D DEBUG_ON_SERIAL_PORT=TRUE" if debug else ""
    inputs: dict[str, Any] = {
        "component": comp.inputs(),
        "grub": digest(grub_inputs),
        "builder": builder.id,
        "script": SCRIPT,
        "target": target,
        "extra": extra,
        "local_tree": str(tree_edk2) if tree_edk2 else None,
        "series_applied": apply_series,
    }
    key = digest(inputs)
    cache = BuildCache(ws.builds)
    name = f"ovmf-{key[:24]}"
    hit = cache.lookup(name) if tree_edk2 is None and tree_grub is None else None
    cached = hit is not None
    # Prepare the edk2 tree before building GRUB, so a series that does not apply
    # fails in seconds with nothing built.
    tree = (
        None
        if cached
        else prepare_tree(comp, ws, builder.tag, local_tree=tree_edk2, apply=apply_series)
    )
    grub = grub_build.build_grub(ws, builder, local_tree=tree_grub, apply=apply_series)
    grub_build.publish(grub, ws.root / "grub")
    if tree is not None:
        with cache.entry(name) as out:
            mounts = [
                containers.Mount(tree.path, "/src"),
                containers.Mount(grub.install / "opt" / "grub", "/opt/grub", read_only=True),
                containers.Mount(out, "/out"),
            ]
            env = {"TARGET": target, "EXTRA": extra}
            run_build(ws, "ovmf", builder.tag, SCRIPT, mounts, out, PROGRESS, env)
            origins = _origins(ws, tree)
            manifest = _manifest(
                out, comp, grub, builder, inputs, origins, time.monotonic() - started
            )
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        hit = ws.builds / name
    else:
        log.info("ovmf: cached build %s", name)
    assert hit is not None
    published = _publish(hit, ws.root / "ovmf")
    manifest = json.loads((published / "manifest.json").read_text())
    return OvmfBuild(published / "OVMF.fd", manifest, cached=cached)


def _origins(ws: Workspace, edk2: SourceTree) -> dict[str, Any]:
    """Where the sources of this build came from: per component the route and the
    archive sha256 or the commit it was checked against; None where that is unknown
    (a local tree, or a work tree unpacked before routes were recorded)."""
    grub = work_tree_provenance(ws, ws.component("grub"))
    return {
        "edk2": edk2.provenance.to_json() if edk2.provenance else None,
        "grub": grub.to_json() if grub else None,
    }


def _manifest(
    out: Path,
    comp: Component,
    grub: grub_build.GrubBuild,
    builder: containers.BuilderImage,
    inputs: dict[str, Any],
    origins: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    report = describe(out / "OVMF.fd")
    grub_info = report["grub"]
    if grub_info is None or not grub_info["pe"]["ok"]:
        raise InfrastructureError(f"The built OVMF.fd has no usable GRUB file ({GRUB_FILE}).")
    modules = [m["name"] for m in grub_info["modules"] or []]
    if "efisecret" not in modules:
        raise InfrastructureError("The GRUB inside the built OVMF.fd lacks the efisecret module.")
    grub_comp = grub.inputs["component"]
    return {
        "schema": "harness-ovmf-manifest/1",
        "output": {
            "file": "OVMF.fd",
            "sha256": report["sha256"],
            "size": report["size"],
            "sev_launch_digest": report["sev_launch_digest"],
            "secret_area": report["secret_area"],
            "hash_table_area": report["hash_table_area"],
            "grub_pe_sha256": grub_info["pe"]["sha256"],
            "grub_modules": modules,
        },
        "inputs": {
            "edk2": comp.inputs(),
            "grub": grub_comp,
            "target": inputs["target"],
            "dsc": DSC,
            "builder_image": {"tag": builder.tag, "id": builder.id},
            "toolchain": (out / "toolchain.txt").read_text().splitlines(),
            "local_trees": {"edk2": inputs["local_tree"], "grub": grub.inputs["local_tree"]},
            "series_applied": inputs["series_applied"],
            "sources": origins,
        },
        "cache_key": digest(inputs),
        "build_seconds": round(seconds, 1),
    }


def _publish(entry: Path, dest: Path) -> Path:
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("OVMF.fd", "manifest.json", "build.log"):
        if (entry / name).exists():
            shutil.copy2(entry / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
