"""The doctor against the real machine: tools, the Docker engine, the accelerator probe."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.errors import PrerequisiteError
from harness.host import doctor, qemu
from tests.conftest import ROOT


@pytest.mark.qemu
@pytest.mark.tools
def test_probe_finds_a_working_accelerator(debian_ovmf: Path) -> None:
    accel, results = qemu.pick_accelerator(debian_ovmf)
    assert results[-1].works and results[-1].accel == accel
    for failed in results[:-1]:
        assert not failed.works and failed.detail  # a reason, e.g. KVM's emulation failure


@pytest.mark.qemu
def test_probe_rejects_firmware_that_does_not_boot(tmp_path: Path) -> None:
    dud = tmp_path / "dud.fd"
    dud.write_bytes(b"\xf4" * (2 * 1024 * 1024))  # hlt everywhere, never prints
    result = qemu.probe(qemu.Accel.TCG, dud, timeout=5)
    assert not result.works and "no boot manager output" in result.detail
    assert subprocess.run(["pgrep", "-f", str(dud)], check=False).returncode == 1  # no orphan


@pytest.mark.docker
def test_docker_engine_answers() -> None:
    check = doctor.ensure_docker(fix=False)
    assert check.ok, check.detail
    assert "storage driver" in check.detail


def test_missing_tool_is_reported_with_the_apt_command(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = doctor.Requirement("ghost", "ghost-pkg", ("no-such-program-here",), "testing")
    assert not ghost.present()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrerequisiteError) as info:
        doctor.install_packages([ghost])
    assert "sudo apt-get install -y ghost-pkg" in str(info.value)


def test_the_doctor_reports_one_install_command_and_installs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --fix the doctor only reports: every missing package in one command, and
    no sudo for root."""
    ghosts = [
        doctor.Requirement(f"ghost{n}", f"ghost-pkg{n}", (f"no-such-program-{n}",), "testing")
        for n in (2, 1)
    ]
    monkeypatch.setattr(doctor, "REQUIREMENTS", (*ghosts, *doctor.REQUIREMENTS))
    monkeypatch.setattr(
        doctor, "install_packages", lambda reqs: pytest.fail("installed without --fix")
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    checks = doctor.ensure(fix=False, probe=False)
    installs = [c for c in checks if c.name == "install"]
    assert [c.detail for c in installs] == ["apt-get install -y ghost-pkg1 ghost-pkg2"]
    assert {c.name for c in checks if c.fails} == {"ghost1", "ghost2", "install"}


@pytest.mark.tools
def test_doctor_task_lists_every_prerequisite() -> None:
    out = subprocess.run(
        [str(ROOT / "inv"), "doctor", "--no-probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    for req in doctor.REQUIREMENTS:
        assert req.name in out.stdout
    assert "docker engine" in out.stdout
