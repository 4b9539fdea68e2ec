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

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from harness import run
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
from harness.components.workspace import Component, Workspace, digest
from harness.errors import InfrastructureError, PrerequisiteError
from harness.host import containers
from harness.host.qemu import Qemu, parse_version
from harness.upstream import style
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


SCHEMA: Final = "harness-qemu-manifest/2"


@dataclass(frozen=True)
class QemuOutput:
    """The emulator binary, its data directory and what it says it is."""

    binary: str
    data_dir: str
    sha256: str
    version: str
    version_line: str
    option_roms: tuple[str, ...]


@dataclass(frozen=True)
class QemuManifest(Manifest):
    """``manifest.json`` of a QEMU build (``harness-qemu-manifest/2``)."""

    schema: Literal["harness-qemu-manifest/2"]
    output: QemuOutput


#: A finished QEMU build.
QemuBuild = Built[QemuManifest]


def _manifest(done: Finished) -> QemuManifest:
    root = done.entry / PREFIX.lstrip("/")
    built = Qemu(str(root / BINARY), root / DATA)
    try:
        line = built.version()
    except InfrastructureError as err:
        raise InfrastructureError(
            f"The built {BINARY} does not run on this host: {err.message}",
            hint="it links the builder image's libraries; build with --base matching the host",
        ) from err
    version = parse_version(line)
    pinned = done.inputs.sources["qemu"].version
    if version != pinned:
        raise InfrastructureError(
            f"The built QEMU reports version {version or line!r}, the pin says {pinned}."
        )
    return QemuManifest(
        schema=SCHEMA,
        output=QemuOutput(
            BINARY,
            DATA,
            sha256_file(root / BINARY),
            version,
            line,
            tuple(sorted(p.name for p in (root / DATA).glob("*.bin"))),
        ),
        **done.record(),
    )


def _options(request: Request, comp: Component) -> dict[str, Any]:
    return {"configure": list(CONFIGURE), "option_roms": list(OPTION_ROMS)}


def _env(request: Request, builder: containers.BuilderImage, comp: Component) -> dict[str, str]:
    return {
        "CONFIGURE": " ".join(CONFIGURE),
        "OPTION_ROMS": " ".join(OPTION_ROMS),
        "PREFIX": PREFIX,
        "STAMP": digest({"builder": builder.id, "configure": list(CONFIGURE)}),
    }


SPEC = Spec(
    name="qemu",
    builder="qemu",
    script=SCRIPT,
    progress=PROGRESS,
    role=Role.EMULATOR,
    style=Style("scripts/checkpatch.pl", style.checkpatch),
    manifest=_manifest,
    manifest_type=QemuManifest,
    publish=(PREFIX.lstrip("/") + "/", MANIFEST, BUILD_LOG),
    build_dir=True,
    options=_options,
    env=_env,
)


def emulator(built: Built[QemuManifest]) -> Qemu:
    """The built QEMU, run from its cache entry."""
    root = built.entry / PREFIX.lstrip("/")
    return Qemu(str(root / BINARY), root / DATA)


def build_qemu(
    ws: Workspace, *, local_tree: Path | None = None, apply: bool = True
) -> Built[QemuManifest]:
    """Build QEMU into ``<workspace>/qemu`` (see :func:`pipeline.build`).

    Raises:
        PatchError, ChecksumError: bad series or source.
        CommandError: the build failed (last 40 lines and the log path in the message).
        InfrastructureError: the built binary does not run here.
    """
    trees = {"qemu": local_tree} if local_tree else {}
    return build(SPEC, ws, Request(trees, apply))


def published(dest: Path) -> Qemu:
    """The QEMU that ``./inv build-qemu`` published in ``dest``.

    Raises:
        PrerequisiteError: there is none.
    """
    binary = dest / BINARY
    if not binary.is_file() or run.which(str(binary)) is None:
        raise PrerequisiteError(f"There is no built QEMU at {binary}; run ./inv build-qemu first.")
    return Qemu(str(binary.resolve()), (dest / DATA).resolve())
