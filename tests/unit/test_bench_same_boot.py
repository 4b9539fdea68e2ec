"""bench.boot's same-boot ratio: the guest's part of one of our boots is QEMU's start to
the marker, what a bare driver of that boot would have timed."""

from __future__ import annotations

import pytest

from harness.boots import phases
from harness.errors import PrerequisiteError
from tools import bench


def test_the_guest_part_ends_at_the_marker_and_leaves_ours_out() -> None:
    stages = phases.split(
        prepare=0.4,
        landmarks={"firmware": 1.5, "GRUB": 2.0, "kernel": 4.0, "initramfs and root": 6.25},
        guest_done=7.0,
        total=7.6,
    )
    assert bench.to_marker(stages) == pytest.approx(6.25)
    # ours: preparation, the power-off the judge waits for, judging and closing on top
    assert sum(stages.values()) / bench.to_marker(stages) == pytest.approx(7.6 / 6.25)


def test_a_boot_without_the_marker_cannot_be_timed() -> None:
    stages = phases.split(prepare=0.1, landmarks={"firmware": 1.0}, guest_done=2.0, total=2.1)
    with pytest.raises(PrerequisiteError, match="no marker"):
        bench.to_marker(stages)
