"""Build the guest kernel: the pinned Linux with ``patches/linux/guest.config``.

No Debian kernel enables ``CONFIG_EFI_SECRET`` (the driver that shows the secrets OVMF
publishes under ``/sys/kernel/security/secrets/coco``), so the guest images boot a kernel
of ours. The configuration is a fragment kept as data, merged onto ``allnoconfig``:
whatever it does not name is off. Kconfig silently drops a value whose dependencies are
unmet, so the build compares the fragment with the resulting ``.config`` and fails
naming each value it did not keep.

The result is ``out/kernel/bzImage`` and its manifest: the release, the hash of the
configuration the kernel carries in itself (``IKCONFIG``, read back from the bzImage,
not from the build tree) and the values of the fragment as that configuration has them.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal

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
)
from harness.components.workspace import Component, digest
from harness.config import PATCHES
from harness.errors import BuildRefused, ConfigError, InfrastructureError
from harness.guest.rootfs import BuiltKernel
from harness.host import containers
from harness.upstream import style
from harness.upstream.sources import sha256_file

log = logging.getLogger(__name__)

#: The configuration fragment (``CONFIG_X=value`` lines, ``#`` comments), in
#: ``patches/linux`` beside the pin and series.
FRAGMENT_NAME = "guest.config"
BZIMAGE = "bzImage"
CONFIG = "config"
# The build tree is kept (O=/build): a changed fragment rewrites .config, and kbuild
# recompiles only what the changed symbols touch.
SCRIPT = r"""
set -eu
export HOME=/tmp
if [ "$(cat /build/.harness-builder 2>/dev/null)" != "$STAMP" ]; then
    find /build -mindepth 1 -delete  # another toolchain: nothing of the old tree is reused
    echo "$STAMP" > /build/.harness-builder
fi
printf '%s\n' "$FRAGMENT" > /tmp/guest.config
make -s -C /src O=/build ARCH=x86_64 KCONFIG_ALLCONFIG=/tmp/guest.config allnoconfig
echo "== make"
make -C /build ARCH=x86_64 -j"$(nproc)" KBUILD_BUILD_USER=harness KBUILD_BUILD_HOST=harness \
    KBUILD_BUILD_TIMESTAMP="$BUILD_TIMESTAMP" bzImage
cp /build/arch/x86/boot/bzImage /out/bzImage
cp /build/.config /out/config
make -s -C /build ARCH=x86_64 kernelrelease > /out/release
{ gcc --version | head -n1; ld --version | head -n1; make --version | head -n1; } \
    > /out/toolchain.txt
"""
PROGRESS = re.compile(r"(?:^== (\w+)|^\s+(?:CC|LD|AR|AS)\s+(\S+))")
#: What the build script stamps into the kernel instead of the time of the build.
BUILD_TIMESTAMP = "harness"

SCHEMA: Final = "harness-kernel-manifest/1"

_LINE = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


def parse_config(text: str) -> dict[str, str]:
    """A kernel configuration (``.config`` or a fragment) as symbol -> value; ``n`` for
    ``# CONFIG_X is not set`` and for ``CONFIG_X=n``.

    Raises:
        ConfigError: a line is neither a value, a comment nor blank.
    """
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _LINE.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = "n"
        elif line and not line.startswith("#"):
            raise ConfigError(f"Kernel configuration line {number} is not CONFIG_X=value: {raw!r}")
    return values


def dropped(fragment: dict[str, str], config: dict[str, str]) -> list[str]:
    """The fragment's values the configuration does not have, as ``X=want (got)``."""
    problems = []
    for symbol, want in fragment.items():
        got = config.get(symbol, "n")
        if got != want:
            problems.append(f"{symbol}={want} (Kconfig made it {got})")
    return problems


#: What ``kernel/configs.c`` wraps the gzipped configuration in.
IKCFG_START = b"IKCFG_ST"
IKCFG_END = b"IKCFG_ED"
_GZIP_MAGIC = b"\x1f\x8b\x08"


def ikconfig(bzimage: bytes) -> str:
    """The configuration a kernel carries in itself (``CONFIG_IKCONFIG``), read from the
    bzImage: the gzip-compressed kernel inside it, then the gzip stream between the
    ``IKCFG_ST`` and ``IKCFG_ED`` markers inside that.

    Raises:
        InfrastructureError: no compressed kernel, or it carries no configuration.
    """
    start = bzimage.find(_GZIP_MAGIC)
    while start != -1:
        try:
            kernel = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[start:])
        except zlib.error:
            start = bzimage.find(_GZIP_MAGIC, start + 1)
            continue
        begin = kernel.find(IKCFG_START)
        if begin != -1:
            end = kernel.find(IKCFG_END, begin)
            blob = kernel[begin + len(IKCFG_START) : end if end != -1 else None]
            return gzip.decompress(blob).decode()
        start = bzimage.find(_GZIP_MAGIC, start + 1)
    raise InfrastructureError(
        "The bzImage carries no configuration of its own (no gzip-compressed kernel with "
        "IKCFG_ST inside)."
    )


@dataclass(frozen=True)
class KernelOutput:
    """The kernel image and what it says of itself."""

    file: str
    sha256: str
    size: int
    release: str
    config_sha256: str  # of the configuration read back from the bzImage
    fragment_sha256: str
    fragment: dict[str, str]  # every value the fragment asks for, as the kernel has it


@dataclass(frozen=True)
class KernelManifest(Manifest):
    """``manifest.json`` of a kernel build (``harness-kernel-manifest/1``)."""

    schema: Literal["harness-kernel-manifest/1"]
    output: KernelOutput


KernelBuild = Built[KernelManifest]


def fragment_text(comp: Component | None = None) -> str:
    """The fragment of *comp* (default: the linux component of ``patches/``).

    Raises:
        ConfigError: there is none.
    """
    directory = comp.directory if comp and comp.directory else PATCHES / "linux"
    path = directory / FRAGMENT_NAME
    try:
        return path.read_text()
    except FileNotFoundError as err:
        raise ConfigError(f"There is no {path}.") from err


def _manifest(done: Finished) -> KernelManifest:
    image = (done.entry / BZIMAGE).read_bytes()
    text = str(done.inputs.options["fragment"])  # what the build was given
    fragment = parse_config(text)
    built_config = (done.entry / CONFIG).read_text()
    if problems := dropped(fragment, parse_config(built_config)):
        raise BuildRefused(
            f"Kconfig did not keep {len(problems)} value(s) of {FRAGMENT_NAME}: "
            + "; ".join(problems),
            hint="a symbol's dependencies are off or it was renamed; see its Kconfig entry",
        )
    own = ikconfig(image)
    inside = parse_config(own)
    if problems := dropped(fragment, inside):
        raise BuildRefused(
            "The bzImage's own configuration differs from the build tree's: " + "; ".join(problems)
        )
    release = (done.entry / "release").read_text().strip()
    pinned = done.inputs.sources["linux"].version
    if not release.startswith(pinned):
        raise BuildRefused(f"The built kernel is {release!r}, the pin says {pinned}.")
    return KernelManifest(
        schema=SCHEMA,
        output=KernelOutput(
            file=BZIMAGE,
            sha256=sha256_file(done.entry / BZIMAGE),
            size=len(image),
            release=release,
            config_sha256=hashlib.sha256(own.encode()).hexdigest(),
            fragment_sha256=hashlib.sha256(text.encode()).hexdigest(),
            fragment={symbol: inside.get(symbol, "n") for symbol in fragment},
        ),
        **done.record(),
    )


def _options(request: Request, comp: Component) -> dict[str, Any]:
    return {"fragment": fragment_text(comp), "timestamp": BUILD_TIMESTAMP}


def _env(request: Request, builder: containers.BuilderImage, comp: Component) -> dict[str, str]:
    return {
        "FRAGMENT": fragment_text(comp),
        "BUILD_TIMESTAMP": BUILD_TIMESTAMP,
        "STAMP": digest({"builder": builder.id}),
    }


SPEC = Spec(
    name="linux",
    builder="linux",
    script=SCRIPT,
    progress=PROGRESS,
    role=Role.GUEST_KERNEL,
    style=Style("scripts/checkpatch.pl", style.checkpatch),
    manifest=_manifest,
    manifest_type=KernelManifest,
    publish=(BZIMAGE, CONFIG, MANIFEST, BUILD_LOG),
    build_dir=True,
    options=_options,
    env=_env,
)


def guest_kernel(built: Built[KernelManifest]) -> BuiltKernel:
    """The kernel of a build, from its cache entry, for the guest images."""
    return BuiltKernel(built.entry / BZIMAGE, built.manifest.output.release)
