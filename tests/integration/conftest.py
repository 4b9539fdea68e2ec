"""Fixtures the boot tests share: the firmware ./inv build-ovmf makes, and the accelerator."""

from __future__ import annotations

import pytest

from harness.components import ovmf
from harness.components.workspace import Workspace
from harness.host import qemu
from tests.conftest import ROOT

OUT = ROOT / "out"


@pytest.fixture(scope="module")
def firmware() -> ovmf.OvmfBuild:
    """The main workspace's OVMF build (built once, then served from the build cache)."""
    return ovmf.build_ovmf(Workspace(OUT))


@pytest.fixture(scope="module")
def accel() -> qemu.Accel:
    return qemu.working_accelerator(OUT / "cache", qemu.DEBIAN_OVMF)
