"""Build QEMU (x86_64-softmmu only) with our series in its builder container.

The result is an install tree under the fixed prefix ``/opt/qemu``, published as
``out/qemu`` (``bin/qemu-system-x86_64``, ``share/qemu`` and ``manifest.json``); the
boots run it with ``--qemu built``.

Debian's ``+ds`` orig tarball strips every prebuilt blob: the ROMs in ``pc-bios``
(SeaBIOS, VGA BIOSes, iPXE, edk2), the submodules under ``roms/`` and the meson wheel
in ``python/wheels``. Meson comes from the builder image instead. Of the ROMs, our
launches (``-bios`` OVMF, ``-nodefaults``, no NIC, no display) load only the x86 option
ROMs (``kvmvapic.bin`` always, ``linuxboot_dma.bin``/``pvh.bin`` for ``-kernel``), and
those QEMU builds from source in ``pc-bios/optionrom``: we install them beside the
binary and install no blobs. The build is self-contained; it does not borrow Debian's
``/usr/share/qemu``, whose ROMs belong to another QEMU release.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import run
from harness.components.pipeline import (
    BuildCache,
    Component,
    Workspace,
    digest,
    prepare_tree,
    run_build,
)
from harness.errors import InfrastructureError, PrerequisiteError
from harness.host import containers
from harness.host.qemu import Qemu, parse_version
from harness.upstream.sources import sha256_file

log = logging.getLogger(__name__)

PREFIX = "/opt/qemu"
#: Only what the boots need: the x86_64 system emulator with TCG and KVM. Everything
#: optional is off (``--without-default-features``), so the build needs only glib and
#: zlib and takes a fraction of a full build.
CONFIGURE = (
    f"--prefix={PREFIX}",
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-kvm",
    "--enable-tcg",
    "--disable-user",
    "--disable-docs",
    "--disable-tools",
    "--disable-guest-agent",
    "--disable-install-blobs",  # stripped from the +ds tarball; see the module docstring
    "--disable-download",  # no network in the build: a missing subproject is an error
    "--disable-werror",  # werror is on for git trees, and ours is one (the series)
    "--disable-debug-info",
    "--disable-qom-cast-debug",
    "--with-pkgversion=harness",
)
#: The option ROMs built from pc-bios/optionrom that our launches may load.
OPTION_ROMS = ("kvmvapic", "linuxboot", "linuxboot_dma", "multiboot", "multiboot_dma", "pvh")
# configure runs again only when its arguments or the builder image changed (then in an
# empty build directory); a series change is meson's and ninja's business, so a
# rebuild after one recompiles only what the patches touched.
SCRIPT = r"""
set -eu
export HOME=/tmp
cd /build
if command -v bzip2 >/dev/null; then
    echo "bzip2 is in the builder image: meson would unpack edk2 blobs the +ds tarball lacks" >&2
    exit 1
fi
if [ ! -f build.ninja ] || [ "$(cat .harness-configure 2>/dev/null)" != "$STAMP" ]; then
    find /build -mindepth 1 -delete
    echo "== configure"; /src/configure $CONFIGURE
    echo "$STAMP" > .harness-configure
fi
echo "== make"; make -j"$(nproc)"
echo "== install"; make install DESTDIR=/out >/dev/null
for rom in $OPTION_ROMS; do
    install -m 0644 "pc-bios/optionrom/$rom.bin" "/out$PREFIX/share/qemu/"
done
{ gcc --version | head -n1; ld --version | head -n1; echo "meson $(meson --version)";
  echo "ninja $(ninja --version)"; python3 --version;
  echo "glib $(pkg-config --modversion glib-2.0)"; } > /out/toolchain.txt
"""
PROGRESS = re.compile(r"(?:^== (\w+)|^(\[\d+/\d+\]) )")
BINARY = "bin/qemu-system-x86_64"
DATA = "share/qemu"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class QemuBuild:
    """A finished QEMU build: the cache entry and its manifest."""

    entry: Path  # contains opt/qemu/... and manifest.json
    manifest: dict[str, Any]
    cached: bool

    @property
    def root(self) -> Path:
        return self.entry / PREFIX.lstrip("/")

    @property
    def qemu(self) -> Qemu:
        return Qemu(str(self.root / BINARY), self.root / DATA)


def plan(
    comp: Component, builder: containers.BuilderImage, local_tree: Path | None, apply: bool
) -> dict[str, Any]:
    """Every input of a QEMU build; its digest is the build's cache key."""
    return {
        "component": comp.inputs(),
        "builder": builder.id,
        "script": SCRIPT,
        "configure": list(CONFIGURE),
        "option_roms": list(OPTION_ROMS),
        "local_tree": str(local_tree) if local_tree else None,
        "series_applied": apply,
    }


def build_qemu(
    ws: Workspace,
    *,
    base: str = containers.DEFAULT_BASE,
    local_tree: Path | None = None,
    apply: bool = True,
) -> QemuBuild:
    """Build QEMU, or return the cached build of exactly these inputs.

    Raises:
        PatchError, ChecksumError: bad series or source.
        CommandError: the build failed (last 40 lines and the log path in the message).
        InfrastructureError: the built binary does not run here.
    """
    with ws.locked():
        return _build_qemu(ws, base, local_tree, apply)


def _build_qemu(ws: Workspace, base: str, local_tree: Path | None, apply: bool) -> QemuBuild:
    builder = containers.ensure_builder("qemu", base, ws.root / "cache")
    comp = ws.component("qemu")
    inputs = plan(comp, builder, local_tree, apply)
    key = digest(inputs)
    cache = BuildCache(ws.builds)
    name = f"qemu-{key[:24]}"
    hit = cache.lookup(name) if local_tree is None else None
    if hit:
        log.info("qemu: cached build %s", name)
        return QemuBuild(hit, _read_manifest(hit), True)
    started = time.monotonic()
    tree = prepare_tree(comp, ws, builder.tag, local_tree=local_tree, apply=apply)
    build_dir = ws.work("qemu") / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    with cache.entry(name) as out:
        mounts = [
            containers.Mount(tree.path, "/src"),
            containers.Mount(build_dir, "/build"),
            containers.Mount(out, "/out"),
        ]
        env = {
            "CONFIGURE": " ".join(CONFIGURE),
            "OPTION_ROMS": " ".join(OPTION_ROMS),
            "PREFIX": PREFIX,
            "STAMP": digest({"builder": builder.id, "configure": list(CONFIGURE)}),
        }
        run_build(ws, "qemu", builder.tag, SCRIPT, mounts, out, PROGRESS, env)
        manifest = _manifest(out, comp, builder, inputs, time.monotonic() - started)
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    entry = ws.builds / name
    return QemuBuild(entry, manifest, False)


def _manifest(
    out: Path,
    comp: Component,
    builder: containers.BuilderImage,
    inputs: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    root = out / PREFIX.lstrip("/")
    built = Qemu(str(root / BINARY), root / DATA)
    try:
        line = built.version()
    except InfrastructureError as err:
        raise InfrastructureError(
            f"The built {BINARY} does not run on this host: {err.message}",
            hint="it links the builder image's libraries; build with --base matching the host",
        ) from err
    version = parse_version(line)
    if version != comp.pin.version:
        raise InfrastructureError(
            f"The built QEMU reports version {version or line!r}, the pin says {comp.pin.version}."
        )
    return {
        "schema": "harness-qemu-manifest/1",
        "output": {
            "binary": BINARY,
            "data_dir": DATA,
            "sha256": sha256_file(root / BINARY),
            "version": version,
            "version_line": line,
            "option_roms": sorted(p.name for p in (root / DATA).glob("*.bin")),
        },
        "inputs": {
            "qemu": comp.inputs(),
            "configure": inputs["configure"],
            "builder_image": {"tag": builder.tag, "id": builder.id},
            "toolchain": (out / "toolchain.txt").read_text().splitlines(),
            "local_tree": inputs["local_tree"],
            "series_applied": inputs["series_applied"],
        },
        "cache_key": digest(inputs),
        "build_seconds": round(seconds, 1),
    }


def _read_manifest(entry: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((entry / MANIFEST).read_text())
    return data


def publish(build: QemuBuild, dest: Path) -> Qemu:
    """Copy the install tree and manifest to ``dest`` (``out/qemu``), replacing it."""
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(build.root, tmp, symlinks=True)
    shutil.copy2(build.entry / MANIFEST, tmp / MANIFEST)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return published(dest)


def published(dest: Path) -> Qemu:
    """The QEMU that ``./inv build-qemu`` published in ``dest``.

    Raises:
        PrerequisiteError: there is none.
    """
    binary = dest / BINARY
    if not binary.is_file() or run.which(str(binary)) is None:
        raise PrerequisiteError(f"There is no built QEMU at {binary}; run ./inv build-qemu first.")
    return Qemu(str(binary.resolve()), (dest / DATA).resolve())
