"""Real container builds: GRUB and AmdSev OVMF from the pins plus our series.

The main workspace's build (built once per machine, then from the machine's cache)
serves the inspection and cache tests: its manifest is the one a cold build wrote. That a
cold build on a machine that never ran one gives the same bytes is proved once per run,
by tests/integration/test_first_run.py (a fresh Docker engine, HOME and clone). The tests
here that must see a build start or fail use a cache of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from uuid import UUID

import jsonschema
import pytest

from harness.components import ovmf, registry
from harness.components.workspace import Workspace
from harness.errors import PatchError
from harness.firmware.fv import SectionType, find_volumes
from harness.firmware.guids import GRUB_FILE
from harness.host import engine
from harness.inspection import describe
from tests.conftest import ROOT, workspace

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    # A cold GRUB + OVMF build takes 7 minutes alone on two cores, longer beside another
    # worker's builds.
    pytest.mark.timeout(1800),
]
SCHEMA_OVMF = registry.SCHEMAS / "ovmf-manifest.schema.json"
SCHEMA_GRUB = registry.SCHEMAS / "grub-manifest.schema.json"


def harness_containers(ws: Workspace) -> list[str]:
    """Build containers of *ws* (other workspaces may be building in parallel)."""
    client = engine.docker_client()
    labels = ["harness=build", *(f"{k}={v}" for k, v in ws.labels.items())]
    return [str(c.id) for c in client.containers.list(all=True, filters={"label": labels})]


@pytest.fixture(scope="module")
def built() -> tuple[Workspace, ovmf.OvmfBuild, float]:
    ws = Workspace(ROOT / "out")
    start = time.monotonic()
    result = ovmf.build_ovmf(ws)
    return ws, result, time.monotonic() - start


def test_the_firmware_has_our_grub_and_its_manifest_every_input(
    built: tuple[Workspace, ovmf.OvmfBuild, float],
) -> None:
    ws, result, _ = built
    report = describe(ovmf.firmware(result))
    assert report["secret_area"] is not None and report["secret_area"]["size"] > 0
    grub = report["grub"]
    assert grub is not None and grub["pe"]["ok"]
    assert "efisecret" in [m["name"] for m in grub["modules"]]
    manifest = json.loads((ovmf.firmware(result).parent / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA_OVMF.read_text()))
    assert manifest["output"]["sha256"] == report["sha256"]
    assert manifest["output"]["sev_launch_digest"] == report["sev_launch_digest"]
    assert manifest["inputs"]["sources"]["ovmf"]["sha256"] == ws.component("ovmf").pin.sha256
    for comp in ("ovmf", "grub"):
        pin = ws.component(comp).pin
        assert pin.commit and manifest["inputs"]["sources"][comp]["commit"] == pin.commit
        # Whichever route delivered the archive, it was checked by its sha256.
        provenance = manifest["inputs"]["provenance"][comp]
        assert (provenance["sha256"], provenance["commit"]) == (pin.sha256, None)
    assert [p["file"] for p in manifest["inputs"]["sources"]["grub"]["patches"]] == [
        p.path.name for p in ws.component("grub").patches
    ]
    grub_manifest = json.loads((ws.root / "grub" / "manifest.json").read_text())
    jsonschema.validate(grub_manifest, json.loads(SCHEMA_GRUB.read_text()))
    assert grub_manifest["output"]["unit_tests"] == {"efisecret_unit_test": "PASS"}
    assert "efisecret" in grub_manifest["output"]["modules"]
    assert any("gcc" in line for line in manifest["inputs"]["toolchain"])
    assert (ws.root / "grub" / "bin" / "grub-mkimage").is_file()
    assert os.stat(ovmf.firmware(result)).st_uid == os.getuid()


#: The COFF TimeDateStamp grub-mkimage writes into every image, whatever the clock:
#: GRUB 2.14's STABLE_EMBEDDING_TIMESTAMP (util/mkimage.c), 2015-01-01 00:00 UTC.
GRUB_PE_TIME_STAMP = 1420070400


def pe_time_stamps(image: bytes) -> dict[UUID, tuple[str, tuple[int, ...]]]:
    """Every PE32 image in the firmware's volumes, by FFS file: its name and time
    stamps, the COFF header's first, then each debug directory entry's."""
    import pefile

    debug = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DEBUG"]
    found = {}
    for top in find_volumes(image):
        for _, ffs in top.walk():
            section = ffs.first(SectionType.PE32)
            if section is None:
                continue
            pe = pefile.PE(data=section.data, fast_load=True)
            pe.parse_data_directories(directories=[debug])
            entries = getattr(pe, "DIRECTORY_ENTRY_DEBUG", [])
            stamps = (pe.FILE_HEADER.TimeDateStamp, *(e.struct.TimeDateStamp for e in entries))
            found[ffs.guid] = (ffs.ui_name or str(ffs.guid), stamps)
    return found


def test_no_build_time_in_the_pe_images(
    built: tuple[Workspace, ovmf.OvmfBuild, float],
) -> None:
    """edk2's GenFw writes the clock into each PE header it makes from an ELF file
    (Elf64Convert.c) and zeroes it again before writing the image (ZeroDebugData in
    GenFw.c); GRUB's image carries grub-mkimage's constant. A build time that reached
    the firmware would change its launch digest with every build: see it here first."""
    _, result, _ = built
    stamps = pe_time_stamps(ovmf.firmware(result).read_bytes())
    name, grub = stamps.pop(GRUB_FILE)
    assert grub == (GRUB_PE_TIME_STAMP,), name
    assert len(stamps) > 50 and "DxeCore" in {n for n, _ in stamps.values()}
    assert {n: s for n, s in stamps.values() if any(s)} == {}


def test_inspect_task_on_the_built_firmware(
    built: tuple[Workspace, ovmf.OvmfBuild, float],
) -> None:
    _, result, _ = built
    out = subprocess.run(
        [str(ROOT / "inv"), "inspect", str(ovmf.firmware(result))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "efisecret" in out.stdout and "a sane x86_64 EFI application" in out.stdout


def test_rerun_is_served_from_cache(
    built: tuple[Workspace, ovmf.OvmfBuild, float],
) -> None:
    ws, first, _ = built
    start = time.monotonic()
    again = ovmf.build_ovmf(ws)
    took = time.monotonic() - start
    assert again.cached
    assert again.manifest.output.sha256 == first.manifest.output.sha256
    print(f"warm rerun: {took:.1f} s")


def test_patch_that_does_not_apply_builds_nothing(tmp_path: Path) -> None:
    patches = tmp_path / "patches"
    shutil.copytree(ROOT / "patches", patches)
    (patch,) = sorted((patches / "ovmf").glob("0001-*.patch"))
    patch.write_text(patch.read_text().replace(" cryptomount -s", " cryptomount --stale"))
    ws = workspace(tmp_path / "out", patches, cold=True)
    with pytest.raises(PatchError, match=patch.name):
        ovmf.build_ovmf(ws)
    assert not (ws.root / "ovmf").exists()
    assert not list(ws.layout.builds.glob("ovmf-*")) and not list(ws.layout.builds.glob("grub-*"))


def test_corrupted_archive_is_refused(tmp_path: Path) -> None:
    patches = tmp_path / "patches"
    shutil.copytree(ROOT / "patches", patches)
    bad = tmp_path / "grub2_2.14.orig.tar.xz"
    bad.write_bytes(b"not the archive")
    pin = patches / "grub" / "upstream.toml"
    text = pin.read_text().replace('sha256 = "bc8d', 'sha256 = "0c8d')
    pin.write_text(
        text.split("[[source]]")[0] + f'[[source]]\nkind = "tarball"\nurl = "file://{bad}"\n'
    )
    ws = Workspace(tmp_path / "out", patches, cache_root=tmp_path / "out" / "cache")
    from harness.components import grub
    from harness.errors import ChecksumError

    with pytest.raises(ChecksumError, match=r"grub2_2\.14\.orig\.tar\.xz"):
        grub.build_grub(ws)
    assert not any(p.is_file() for p in (ws.root / "cache" / "downloads").rglob("*"))


def test_ctrl_c_mid_build_leaves_no_container_and_no_cache_entry(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "out", cold=True)
    proc = subprocess.Popen(
        [str(ROOT / "inv"), "build-grub", "--workspace", str(ws.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # The workspace's own cache: the machine's holds this build already.
        env={**os.environ, "HARNESS_CACHE": str(ws.cache_root)},
        # A background CI job may run us with SIGINT ignored, which children inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 600
    while not harness_containers(ws) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert harness_containers(ws), "the build container should be running now"
    time.sleep(2)  # well inside the build, not at its very start
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130, proc.stdout.read() if proc.stdout else ""
    assert harness_containers(ws) == []
    assert not list(ws.layout.builds.glob("grub-*"))


@pytest.mark.qemu
def test_built_firmware_runs_grub_and_refuses_an_unencrypted_boot(
    built: tuple[Workspace, ovmf.OvmfBuild, float],
) -> None:
    """No disk at all: GRUB from the firmware volume runs our grub.cfg, finds no
    encrypted root, and reboots (QEMU exits under -no-reboot) instead of booting."""
    import re

    from harness import run
    from harness.host import qemu

    _, result, _ = built
    argv = qemu.probe_argv(qemu.Accel.TCG, ovmf.firmware(result))
    seen = run.watch(
        argv, {"gave up": re.compile(r"Failed to find any grub configuration")}, timeout=120
    )
    assert seen.matched == "gave up", seen.output[-2000:]
    assert "Entering grub config" in seen.output
    assert 'Boot0001 "Grub Bootloader"' in seen.output
