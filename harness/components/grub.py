"""Build GRUB (x86_64-efi) with our series in the builder container.

The result is an install tree under the fixed prefix ``/opt/grub`` (grub-mkimage and
the modules), which the OVMF build mounts at the same place.
"""

from __future__ import annotations

import enum
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.components.pipeline import (
    BuildCache,
    Component,
    Workspace,
    digest,
    prepare_tree,
    run_build,
)
from harness.host import containers

log = logging.getLogger(__name__)

PREFIX = "/opt/grub"
#: GRUB's own native unit tests (``testcase = native`` programs in Makefile.util.def)
#: that every build compiles for the build host and runs; a failing one fails the
#: build. Our series adds efisecret_test; a tree without it (``--no-series``) says so.
UNIT_TESTS = ("efisecret_test",)
# autogen only when the series (HEAD) changed: it regenerates the build system, and
# with it every object. The stamp lives in the build directory.
SCRIPT = r"""
set -eu
export HOME=/tmp
head=$(git -C /src rev-parse HEAD)
cd /build
if [ ! -f config.status ] || [ "$(cat .harness-head 2>/dev/null)" != "$head" ]; then
    echo "== autogen"; (cd /src && ./autogen.sh)
    echo "== configure"
    /src/configure --with-platform=efi --target=x86_64 --prefix=/opt/grub --disable-werror
    echo "$head" > .harness-head
fi
echo "== make"; make -j"$(nproc)"
echo "== unit tests"
failed=
for t in @UNIT_TESTS@; do
    if ! make -n "$t" >/dev/null 2>&1; then echo "unit test $t: ABSENT"; continue; fi
    make "$t"
    if ./"$t"; then echo "unit test $t: PASS"; else echo "unit test $t: FAIL"; failed=1; fi
done
[ -z "$failed" ]
echo "== install"; make install DESTDIR=/out >/dev/null
{ gcc --version | head -n1; ld --version | head -n1; } > /out/toolchain.txt
""".replace("@UNIT_TESTS@", " ".join(UNIT_TESTS))
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


@dataclass(frozen=True)
class GrubBuild:
    """A finished GRUB build: the install tree and what went into it."""

    key: str
    install: Path  # contains opt/grub/...
    inputs: dict[str, object]
    seconds: float
    cached: bool

    @property
    def mkimage(self) -> Path:
        return self.install / "opt" / "grub" / "bin" / "grub-mkimage"

    @property
    def modules(self) -> Path:
        return self.install / "opt" / "grub" / "lib" / "grub" / "x86_64-efi"

    @property
    def unit_tests(self) -> tuple[UnitTest, ...]:
        """What the unit tests of this build said (a cached build keeps its log)."""
        log_file = self.install / "build.log"
        return unit_tests(log_file.read_text(errors="replace")) if log_file.is_file() else ()


def plan(
    comp: Component, builder: containers.BuilderImage, local_tree: Path | None, apply: bool
) -> dict[str, object]:
    """Every input of a GRUB build; its digest is the build's cache key."""
    return {
        "component": comp.inputs(),
        "builder": builder.id,
        "script": SCRIPT,
        "local_tree": str(local_tree) if local_tree else None,
        "series_applied": apply,
    }


def build_grub(
    ws: Workspace,
    builder: containers.BuilderImage,
    *,
    component: Component | None = None,
    local_tree: Path | None = None,
    apply: bool = True,
) -> GrubBuild:
    """Build GRUB, or return the cached build of exactly these inputs.

    Raises:
        PatchError, ChecksumError: bad series or source.
        CommandError: the build failed (last 40 lines and the log path in the message).
    """
    with ws.locked():
        return _build_grub(ws, builder, component, local_tree, apply)


def _build_grub(
    ws: Workspace,
    builder: containers.BuilderImage,
    component: Component | None,
    local_tree: Path | None,
    apply: bool,
) -> GrubBuild:
    comp = component or ws.component("grub")
    inputs = plan(comp, builder, local_tree, apply)
    key = digest(inputs)
    cache = BuildCache(ws.builds)
    name = f"grub-{key[:24]}"
    hit = cache.lookup(name) if local_tree is None else None
    if hit:
        log.info("grub: cached build %s", name)
        return GrubBuild(key, hit, inputs, 0.0, True)
    started = time.monotonic()
    tree = prepare_tree(comp, ws, builder.tag, local_tree=local_tree, apply=apply)
    build_dir = ws.work("grub") / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    with cache.entry(name) as out:
        mounts = [
            containers.Mount(tree.path, "/src"),
            containers.Mount(build_dir, "/build"),
            containers.Mount(out, "/out"),
        ]
        run_build(ws, "grub", builder.tag, SCRIPT, mounts, out, PROGRESS)
        final = ws.builds / name
    return GrubBuild(key, final, inputs, time.monotonic() - started, False)


def publish(build: GrubBuild, dest: Path) -> None:
    """Copy the install tree to ``dest`` (``out/grub``), replacing what was there."""
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(build.install / "opt" / "grub", tmp, symlinks=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
