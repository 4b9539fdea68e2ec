"""Where a boot's seconds go: a scripted fake guest prints the landmarks with pauses,
and the real Console's read times and harness.boots.phases split them."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.boots import phases
from harness.host import console


def test_landmarks_are_timed_when_they_are_read(tmp_path: Path) -> None:
    script = tmp_path / "guest.py"
    script.write_text(
        "import sys, time\n"
        "def say(s, pause):\n"
        "    sys.stdout.write(s); sys.stdout.flush(); time.sleep(pause)\n"
        "say('BdsDxe: loading Boot0001\\n', 0.4)\n"
        "say('BdsDxe: starting Boot0001\\nAttempting to decrypt master key...\\n', 0.8)\n"
        "say('Slot 0 opened\\nharness: loading the kernel\\n', 0.3)\n"
        "say('HARNESS-BOOTED token=t\\n', 30)\n"
    )
    con = console.spawn([sys.executable, str(script)], tmp_path / "console.log")
    try:
        con.expect("HARNESS-BOOTED token=t", 20)
        marks = con.landmarks(phases.LANDMARKS)
    finally:
        con.close()
    # In order; the kernel's landmark was not shown, so its stage merges into the next.
    assert list(marks) == [
        "firmware", "GRUB", "key derivation", "GRUB to the kernel", "initramfs and root",
    ]  # fmt: skip
    assert 0.3 <= marks["firmware"] <= marks["GRUB"] < marks["key derivation"]  # one read
    assert marks["key derivation"] - marks["GRUB"] >= 0.7  # the pause before "Slot 0"
    assert marks["initramfs and root"] - marks["GRUB to the kernel"] >= 0.2
    stages = phases.split(1.5, marks, marks["initramfs and root"] + 2.0, 20.0)
    assert list(stages) == [
        "preparation", "firmware", "GRUB", "key derivation", "GRUB to the kernel",
        "initramfs and root", "judging, to QEMU's exit", "after QEMU",
    ]  # fmt: skip
    assert stages["preparation"] == 1.5 and stages["judging, to QEMU's exit"] == 2.0
    assert sum(stages.values()) == pytest.approx(20.0)


def test_a_landmark_is_searched_only_after_the_one_before() -> None:
    times = console.ReadTimes()
    con = console.Console(None, Path("/nonexistent"), read_times=times)  # type: ignore[arg-type]
    text = "Slot 0 opened\nBdsDxe: starting\nAttempting to decrypt master key\n"
    con._raw.append(text)
    times.write(text)
    assert list(con.landmarks(phases.LANDMARKS)) == ["firmware", "GRUB"]


@pytest.mark.parametrize("slot", ["Slot 0 opened", 'Slot "1" opened'])  # LUKS1, LUKS2
def test_both_luks_versions_show_the_key_derivation(slot: str) -> None:
    times = console.ReadTimes()
    con = console.Console(None, Path("/nonexistent"), read_times=times)  # type: ignore[arg-type]
    text = f"BdsDxe: starting\nAttempting to decrypt master key...\n{slot}\n"
    con._raw.append(text)
    times.write(text)
    assert list(con.landmarks(phases.LANDMARKS)) == ["firmware", "GRUB", "key derivation"]


@pytest.mark.parametrize("script", ["init", "initramfs-init"])  # Debian's kernel, ours
def test_both_kernels_of_the_minimal_image_end_the_kernel_stage(script: str) -> None:
    """The first line each of the minimal image's init scripts prints (as the guest
    prints it: the shell's echo) is the kernel stage's landmark, so a Debian-kernel
    boot's kernel time is not counted as the initramfs's."""
    root = Path(__file__).resolve().parents[2]
    said = [
        line.split('"')[1].replace("$device", "/dev/vda2").replace("$name", "root")
        for line in (root / "images" / "minimal" / script).read_text().splitlines()
        if line.startswith("echo ") and "HARNESS-" not in line and "$*" not in line
    ]
    kernel = dict(phases.LANDMARKS)["kernel"]
    assert said and re.search(kernel, said[0]), said


def test_read_times_map_offsets_to_the_read_that_brought_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 101.0, 103.5])
    monkeypatch.setattr(console, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    times = console.ReadTimes()  # started at 100
    times.write("abc")  # read at 101
    times.write("defg")  # read at 103.5
    assert [times.at(i) for i in (0, 2, 3, 6)] == [1.0, 1.0, 3.5, 3.5]
    assert times.at(7) is None


def test_a_boot_without_landmarks_is_preparation_judging_and_after() -> None:
    stages = phases.split(0.5, {}, 3.0, 4.0)
    assert stages == {"preparation": 0.5, "judging, to QEMU's exit": 3.0, "after QEMU": 0.5}
    assert phases.render(stages) == "preparation 0.5, judging, to QEMU's exit 3.0, after QEMU 0.5"
