"""Which QEMU a boot runs (``--qemu system|built``), its command line, the accelerator
verdicts kept per QEMU version, and the QEMU build's cache key. No QEMU runs here: a
stand-in script answers ``--version``."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from harness.boots import prepare
from harness.components import qemu as qemu_build
from harness.components.pipeline import Request, plan
from harness.components.workspace import Workspace
from harness.config import resolve
from harness.errors import ConfigError, PrerequisiteError
from harness.host import containers, qemu
from tests.conftest import ROOT


def fake_qemu(directory: Path, version_line: str) -> Path:
    """An executable that answers ``--version`` like QEMU does."""
    binary = directory / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text(f"#!{sys.executable}\nprint({version_line!r})\nprint('Copyright')\n")
    binary.chmod(0o755)
    (directory / "share" / "qemu").mkdir(parents=True, exist_ok=True)
    return binary


def test_launch_runs_the_chosen_binary_with_its_data_dir(tmp_path: Path) -> None:
    built = qemu.Qemu(str(tmp_path / "bin" / "qemu-system-x86_64"), tmp_path / "share" / "qemu")
    common = {
        "firmware": tmp_path / "OVMF.fd",
        "disk": tmp_path / "disk.img",
        "accel": qemu.Accel.TCG,
        "qmp": tmp_path / "q.sock",
    }
    default = qemu.LaunchConfig(**common).argv()  # type: ignore[arg-type]
    assert default[0] == "qemu-system-x86_64" and "-L" not in default
    argv = qemu.LaunchConfig(**common, emulator=built).argv()  # type: ignore[arg-type]
    assert argv[:3] == [built.program, "-L", str(tmp_path / "share" / "qemu")]
    assert argv[3:] == default[1:]
    assert qemu.probe_argv(qemu.Accel.TCG, tmp_path / "OVMF.fd", built)[0] == built.program


def test_version_is_parsed_from_the_first_line() -> None:
    assert qemu.parse_version("QEMU emulator version 10.0.13 (harness)") == "10.0.13"
    line = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"
    assert qemu.parse_version(line) == "7.2.22"
    assert qemu.parse_version("qemu-system-x86_64: command not found") is None


def test_select_qemu(tmp_path: Path) -> None:
    def choose(choice: str) -> qemu.Qemu:
        return prepare.select_qemu(resolve(workspace=str(tmp_path), qemu=choice))

    assert choose("system") is qemu.SYSTEM
    with pytest.raises(PrerequisiteError, match=r"no built QEMU .*run \./inv build-qemu first"):
        choose("built")
    with pytest.raises(ConfigError, match="--qemu must be system or built, not 'host'"):
        choose("host")
    binary = fake_qemu(tmp_path / "qemu", "QEMU emulator version 10.0.13 (harness)")
    chosen = choose("built")
    assert chosen.program == str(binary.resolve())
    assert chosen.data_dir == (tmp_path / "qemu" / "share" / "qemu").resolve()
    assert chosen.version() == "QEMU emulator version 10.0.13 (harness)"


def test_a_missing_binary_is_a_prerequisite_error(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match="does not exist"):
        qemu.Qemu(str(tmp_path / "nothing")).require()


def test_accelerator_verdicts_are_kept_per_qemu_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / qemu.ACCEL_CACHE_NAME).write_text(json.dumps({"key": "old format", "accel": "kvm"}))
    probed: list[str] = []

    def pick(firmware: Path, emulator: qemu.Qemu) -> tuple[qemu.Accel, list[qemu.ProbeResult]]:
        probed.append(emulator.program)
        return qemu.Accel.TCG, [qemu.ProbeResult(qemu.Accel.TCG, True, 1.0, "ok")]

    monkeypatch.setattr(qemu, "pick_accelerator", pick)
    old = qemu.Qemu(str(fake_qemu(tmp_path / "a", "QEMU emulator version 7.2.22")))
    new = qemu.Qemu(str(fake_qemu(tmp_path / "b", "QEMU emulator version 10.0.13 (harness)")))
    fw = tmp_path / "OVMF.fd"
    assert qemu.working_accelerator(cache, fw, old) is qemu.Accel.TCG
    assert qemu.working_accelerator(cache, fw, new) is qemu.Accel.TCG
    assert qemu.working_accelerator(cache, fw, old) is qemu.Accel.TCG  # kept: no probe
    assert probed == [old.program, new.program]
    verdicts = json.loads((cache / qemu.ACCEL_CACHE_NAME).read_text())["verdicts"]
    assert sorted(k.split(" / ")[0] for k in verdicts) == [
        "QEMU emulator version 10.0.13 (harness)",
        "QEMU emulator version 7.2.22",
    ]
    assert all(k.endswith(os.uname().release) for k in verdicts)


def test_build_key_covers_the_series_and_the_configuration(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, ROOT / "patches", cache_root=tmp_path / "cache")
    builder = containers.BuilderImage("harness-qemu:x", "sha256:1", tmp_path / "Dockerfile")
    base = plan(qemu_build.SPEC, ws, builder, Request())
    assert "--target-list=x86_64-softmmu" in base.inputs["configure"]
    patches = tmp_path / "patches"
    shutil.copytree(ROOT / "patches" / "qemu", patches / "qemu")
    (patches / "qemu" / "0001-x.patch").write_text(
        "From: me <me@example.org>\nSubject: [PATCH] x\n\nSigned-off-by: me <me@example.org>\n"
    )
    with open(patches / "qemu" / "series", "a") as series:
        series.write("0001-x.patch\n")
    patched = plan(
        qemu_build.SPEC,
        Workspace(tmp_path, patches, cache_root=tmp_path / "cache"),
        builder,
        Request(),
    )
    assert patched.key != base.key
    assert plan(qemu_build.SPEC, ws, builder, Request()).key == base.key
    other = containers.BuilderImage("harness-qemu:y", "sha256:2", tmp_path / "Dockerfile")
    assert plan(qemu_build.SPEC, ws, other, Request()).key != base.key
    assert plan(qemu_build.SPEC, ws, builder, Request(apply=False)).key != base.key
