"""Build GRUB (x86_64-efi) with our series in the builder container.

The result is an install tree under the fixed prefix ``/opt/grub`` (grub-mkimage and
the modules), which the OVMF build mounts at the same place.

The same source and series are also built for ``arm64-efi`` (:data:`ARM64`), the other
architecture whose confidential-computing firmware (Arm CCA) fills the EFI secret table:
cross-compiled with Debian's aarch64 toolchain, GRUB's native unit tests compiled for
aarch64 and run under qemu-user. Nothing boots that build; it proves that efisecret
builds and parses tables on arm64.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

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
from harness.components.workspace import Workspace
from harness.errors import InfrastructureError
from harness.upstream import style

log = logging.getLogger(__name__)

PREFIX = "/opt/grub"
#: GRUB's own native unit tests (``testcase = native`` programs in Makefile.util.def)
#: that every build compiles for the build host and runs; a failing one fails the
#: build. Our series adds efisecret_unit_test; a tree without it (``--no-series``) says so.
UNIT_TESTS = ("efisecret_unit_test",)
# autogen only when the series (HEAD) changed: it regenerates the build system, and
# with it every object. The stamp lives in the build directory. @CONFIGURE@ names the
# platform, @RUN@ what runs a unit test program, @TOOLCHAIN@ what made the build.
_SCRIPT = r"""
set -eu
export HOME=/tmp
head=$(git -C /src rev-parse HEAD)
cd /build
if [ ! -f config.status ] || [ "$(cat .harness-head 2>/dev/null)" != "$head" ]; then
    echo "== autogen"; (cd /src && ./autogen.sh)
    echo "== configure"
    /src/configure @CONFIGURE@ --prefix=/opt/grub --disable-werror
    echo "$head" > .harness-head
fi
echo "== make"; make -j"$(nproc)"
echo "== unit tests"
failed=
for t in @UNIT_TESTS@; do
    if ! make -n "$t" >/dev/null 2>&1; then echo "unit test $t: ABSENT"; continue; fi
    make "$t"
    if @RUN@./"$t"; then echo "unit test $t: PASS"; else echo "unit test $t: FAIL"; failed=1; fi
done
[ -z "$failed" ]
echo "== install"; make install DESTDIR=/out >/dev/null
{ @TOOLCHAIN@; } > /out/toolchain.txt
"""


def _script(configure: str, run: str, toolchain: str) -> str:
    return (
        _SCRIPT.replace("@CONFIGURE@", configure)
        .replace("@RUN@", run)
        .replace("@TOOLCHAIN@", toolchain)
        .replace("@UNIT_TESTS@", " ".join(UNIT_TESTS))
    )


SCRIPT = _script(
    "--with-platform=efi --target=x86_64",
    "",
    "gcc --version | head -n1; ld --version | head -n1",
)
PROGRESS = re.compile(r"(?:^== (\w+)|-o (\S+\.(?:o|mod|img|exec))\b)")
#: The script's verdict line for each unit test, and the failure lines GRUB's test
#: runner prints before it (`` file:function:line: assert failed: ...``).
UNIT_VERDICT = re.compile(r"^unit test (\S+): (PASS|FAIL|ABSENT)$", re.MULTILINE)
UNIT_FAILURE = re.compile(r"^ (\S+:\S+:\d+: .*)$", re.MULTILINE)


class UnitVerdict(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    ABSENT = "ABSENT"  # the tree does not define the test


@dataclass(frozen=True)
class UnitTest:
    """One unit test's verdict in a build log, with the assertions that failed."""

    name: str
    verdict: UnitVerdict
    failures: tuple[str, ...] = ()


def unit_tests(log_text: str) -> tuple[UnitTest, ...]:
    """The unit tests a build log reports, in the order they ran. Empty when the build
    stopped before them."""
    found = []
    start = 0
    for m in UNIT_VERDICT.finditer(log_text):
        failures = tuple(UNIT_FAILURE.findall(log_text, start, m.start()))
        verdict = UnitVerdict(m.group(2))
        if verdict is not UnitVerdict.FAIL:
            failures = ()
        found.append(UnitTest(m.group(1), verdict, failures))
        start = m.end()
    return tuple(found)


SCHEMA: Final = "harness-grub-manifest/1"


@dataclass(frozen=True)
class GrubOutput:
    """The install tree (``/opt/grub``) and what the build's own tests said."""

    prefix: str
    mkimage: str
    modules_dir: str
    modules: tuple[str, ...]
    unit_tests: dict[str, UnitVerdict]


@dataclass(frozen=True)
class GrubManifest(Manifest):
    """``manifest.json`` of a GRUB build (``harness-grub-manifest/1``)."""

    schema: Literal["harness-grub-manifest/1"]
    output: GrubOutput


#: A finished GRUB build.
GrubBuild = Built[GrubManifest]

MKIMAGE = "bin/grub-mkimage"
MODULES = "lib/grub/x86_64-efi"


def _manifest(done: Finished, modules: str = MODULES) -> GrubManifest:
    root = done.entry / PREFIX.lstrip("/")
    if not (root / MKIMAGE).is_file():
        raise InfrastructureError(f"The GRUB build installed no {MKIMAGE}.")
    found = tuple(sorted(p.stem for p in (root / modules).glob("*.mod")))
    log_text = (done.entry / BUILD_LOG).read_text(errors="replace")
    return GrubManifest(
        schema=SCHEMA,
        output=GrubOutput(
            PREFIX, MKIMAGE, modules, found, {t.name: t.verdict for t in unit_tests(log_text)}
        ),
        **done.record(),
    )


SPEC = Spec(
    name="grub",
    builder="bookworm",
    script=SCRIPT,
    progress=PROGRESS,
    role=Role.FIRMWARE_PART,
    style=Style("git show --check + grub-dev.texi conventions", style.grub_conventions),
    manifest=_manifest,
    manifest_type=GrubManifest,
    publish=("opt/grub/", MANIFEST, BUILD_LOG),
    build_dir=True,
    unit_tests=UNIT_TESTS,
)


# arm64-efi: GRUB's configure builds the utilities and native tests for --host and the
# modules for --target. The unit tests are aarch64 programs, run by qemu-aarch64 with
# the cross libc's loader and libraries (-L); qemu-aarch64 refuses any other ELF, so a
# test that ran was an aarch64 build. The source tree is the x86_64 build's.
ARM64_SCRIPT = _script(
    "--host=aarch64-linux-gnu --target=aarch64-linux-gnu --with-platform=efi",
    "qemu-aarch64 -L /usr/aarch64-linux-gnu ",
    "aarch64-linux-gnu-gcc --version | head -n1; aarch64-linux-gnu-ld --version | head -n1; "
    "qemu-aarch64 --version | head -n1",
)
ARM64_MODULES = "lib/grub/arm64-efi"

#: GRUB for arm64-efi from GRUB's own pin, series and tree (``./inv build grub-arm64``).
ARM64 = dataclasses.replace(
    SPEC,
    name="grub-arm64",
    builder="arm64",
    script=ARM64_SCRIPT,
    role=Role.OTHER_ARCH,
    manifest=lambda done: _manifest(done, ARM64_MODULES),
    source="grub",
)


def build_grub(
    ws: Workspace, *, local_tree: Path | None = None, apply: bool = True
) -> Built[GrubManifest]:
    """Build GRUB into ``<workspace>/grub`` (see :func:`pipeline.build`)."""
    trees = {"grub": local_tree} if local_tree else {}
    return build(SPEC, ws, Request(trees, apply))


def ran_unit_tests(built: Built[GrubManifest]) -> tuple[UnitTest, ...]:
    """What the unit tests of a build said, failures included (a cached build keeps
    its log)."""
    return unit_tests(built.log.read_text(errors="replace")) if built.log.is_file() else ()
