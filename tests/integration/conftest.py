"""Fixtures the boot tests share: the firmware ./inv build-ovmf makes, the guest kernel
./inv build-kernel makes, the accelerator, and the night with the Debian variant."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.components import linux, ovmf
from harness.components.pipeline import build
from harness.components.workspace import Workspace
from harness.config import resolve
from harness.flows import nightly
from harness.guest import imagemeta
from harness.guest.imagemeta import LuksVariant
from harness.guest.rootfs import BuiltKernel
from harness.host import qemu
from tests.conftest import CACHE, ROOT

OUT = ROOT / "out"
#: The Debian night's own workspace (its builds are the machine cache's hits): other
#: nights in out/ reuse out/runs/nightly, and this night's image must outlive them.
DEBIAN_NIGHT = OUT / "test-debian-night"


@pytest.fixture(scope="module")
def firmware() -> ovmf.OvmfBuild:
    """The main workspace's OVMF build (built once, then served from the build cache)."""
    return ovmf.build_ovmf(Workspace(OUT))


@pytest.fixture(scope="module")
def guest_kernel() -> BuiltKernel:
    """The main workspace's guest kernel (built once, then served from the build cache)."""
    return linux.guest_kernel(build(linux.SPEC, Workspace(OUT)))


@pytest.fixture(scope="module")
def accel() -> qemu.Accel:
    return qemu.working_accelerator(CACHE, qemu.DEBIAN_OVMF)


@dataclass(frozen=True)
class DebianNight:
    """A night with the Debian variant: what it returned, wrote and built."""

    status: int
    report: Path
    history: Path
    image: imagemeta.Image
    cases: tuple[tuple[str, LuksVariant], ...]


#: The minimal cases beside the Debian variant: one passwordless boot.
DEBIAN_NIGHT_CASES = (("passwordless", LuksVariant.LUKS1),)


def once_per_run(where: Path, make: Callable[[], str]) -> str:
    """*make*'s answer (a line of text), made once per test run under a lock in *where*:
    whichever worker asks first runs it, the others wait and read what it returned. A
    *make* that raises leaves nothing, and the next worker tries again."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"
    where.mkdir(parents=True, exist_ok=True)
    with open(where / ".test-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = where / ".run"
        if not (stamp.is_file() and stamp.read_text().startswith(f"{run_id} ")):
            stamp.unlink(missing_ok=True)
            stamp.write_text(f"{run_id} {make()}")
        return stamp.read_text().split(" ", 1)[1]


def debian_night() -> DebianNight:
    """The night with the Debian variant, once per test run: the Debian image is minutes
    of both cores, so the nightly's image is the one every Debian test reads and its
    boots are the ones they judge (test_debian_image, test_nightly)."""
    report, history = DEBIAN_NIGHT / "report", DEBIAN_NIGHT / "history"
    ws = Workspace(DEBIAN_NIGHT, ROOT / "patches")
    where = ws.layout.runs / nightly.RUN_DIR / "images" / nightly.DEBIAN_IMAGE_CASE

    def night() -> str:
        for old in (report, history):
            shutil.rmtree(old, ignore_errors=True)
        cfg = resolve(workspace=str(DEBIAN_NIGHT))
        return str(nightly.nightly(cfg, report, history, workspace=ws, cases=DEBIAN_NIGHT_CASES))

    # Not the workspace's own lock (.lock), which the night takes inside.
    status = int(once_per_run(DEBIAN_NIGHT, night))
    return DebianNight(status, report, history, imagemeta.load(where), DEBIAN_NIGHT_CASES)


@pytest.fixture(scope="module")
def night_with_debian() -> DebianNight:
    return debian_night()
