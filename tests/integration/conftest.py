"""Fixtures the boot tests share: the firmware ./inv build-ovmf makes, the guest kernel
./inv build-kernel makes, and the accelerator."""

from __future__ import annotations

import pytest

from harness.components import linux, ovmf
from harness.components.pipeline import build
from harness.components.workspace import Workspace
from harness.guest.image import BuiltKernel
from harness.host import qemu
from tests.conftest import CACHE, ROOT

OUT = ROOT / "out"


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
