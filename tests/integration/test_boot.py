"""The boot matrix: the firmware ./inv build-ovmf makes, encrypted images, real QEMU.

Scenarios 1-3 run for every LUKS variant; refusal, secret-wiped, tampered-firmware and
the hostile host's scenarios run on LUKS1. The firmware comes from the main workspace
(built once, then cached).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from harness import run
from harness.boots import matrix, scenarios, verdicts
from harness.boots.prepare import Firmware, HostDisk, Machine, Target
from harness.boots.result import Result
from harness.boots.runner import run_scenario
from harness.components import ovmf
from harness.config import LaunchKind
from harness.guest import imagemeta, proof, xts
from harness.guest.cryptdisk import payload_offset, volume_key
from harness.guest.image import build_image
from harness.guest.imagemeta import Image, LuksVariant
from harness.guest.rootfs import BuiltKernel
from harness.host import qemu
from harness.passphrase import Passphrase
from tests.conftest import IMAGE_CACHE, ROOT, tools_builder
from tests.integration.conftest import once_per_run

pytestmark = [
    pytest.mark.docker,
    pytest.mark.qemu,
    pytest.mark.tools,
    pytest.mark.slow,
    # The first test's fixtures may wait for the cold OVMF and guest kernel builds.
    pytest.mark.timeout(3600),
]
OUT = ROOT / "out"


#: The matrix's images, shared by the workers of a run.
MATRIX_IMAGES = OUT / "images" / "test-matrix"


@pytest.fixture(scope="module")
def images(guest_kernel: BuiltKernel) -> matrix.Images:
    """The matrix's images, built once per test run and shared by the workers: every
    boot opens its disk with snapshot=on, so no boot writes to it. (A set per worker
    cost both cores 20 s before the first boot.)"""
    where = MATRIX_IMAGES / "images"

    def make() -> str:
        shutil.rmtree(where, ignore_errors=True)
        matrix.build_images(where, IMAGE_CACHE, tools_builder().tag, kernel=guest_kernel)
        return "built"

    once_per_run(MATRIX_IMAGES, make)
    needed = {(scenarios.SCENARIOS[name].recipe, variant) for name, variant in matrix.MATRIX}
    owner = {(r, v): imagemeta.load(where / f"{r}-{v.value}") for r, v in sorted(needed)}
    return matrix.Images(owner, imagemeta.load(where / matrix.HOST_RECIPE))


def test_images_are_real_luks(images: matrix.Images, tmp_path: Path) -> None:
    for (_, variant), img in [*images.owner.items(), ((None, matrix.HOST_VARIANT), images.host)]:
        assert stat.S_IMODE(img.passphrase_file.stat().st_mode) == 0o600
        assert img.metadata.variant == variant.value
        part = tmp_path / f"{variant}.luks"
        start = img.metadata.partition_start
        with open(img.disk, "rb") as src:
            src.seek(start)
            part.write_bytes(src.read())
        run.run(
            [
                "cryptsetup",
                "open",
                "--test-passphrase",
                "--key-file",
                str(img.passphrase_file),
                str(part),
            ]
        )
        key = volume_key(part, img.passphrase_file, tmp_path)
        offset = payload_offset(part)
        assert offset == img.metadata.payload_offset
        with open(part, "rb") as f:
            f.seek(offset)
            head = xts.decrypt(key, f.read(4096))
        assert head[1024 + 56 : 1024 + 58] == b"\x53\xef"  # the ext4 superblock magic


def _boot(
    name: str,
    img: Image,
    firmware: ovmf.OvmfBuild,
    accel: qemu.Accel,
    workdir: Path,
    host_disk: HostDisk | None = None,
    kind: LaunchKind = LaunchKind.SIMULATED,
) -> Result:
    """One scenario on *img* with the workspace's firmware (its manifest's digest)."""
    return run_scenario(
        scenarios.SCENARIOS[name],
        Target.of(Firmware(ovmf.firmware(firmware), firmware.manifest.launch_digest), img),
        Machine(accel, kind=kind),
        workdir,
        host_disk,
    )


MATRIX = list(matrix.MATRIX)


@pytest.mark.parametrize("name, variant", MATRIX, ids=[f"{n}-{v}" for n, v in MATRIX])
def test_scenario(
    name: str,
    variant: LuksVariant,
    firmware: ovmf.OvmfBuild,
    images: matrix.Images,
    accel: qemu.Accel,
) -> None:
    img = images.for_case(name, variant)
    needs_host = scenarios.SCENARIOS[name].needs_host_disk
    result = _boot(
        name,
        img,
        firmware,
        accel,
        OUT / "boot" / f"{name}-{variant}",
        host_disk=images.host_disk() if needs_host else None,
    )
    assert result.passed, result.detail
    transcript = result.transcript.read_text()
    if name == "passwordless":
        assert "Enter passphrase" not in transcript
        # Where its seconds went: every stage of our image's boot shown, adding up.
        assert list(result.phases) == [
            "preparation", "firmware", "GRUB", "key derivation", "GRUB to the kernel",
            "kernel", "initramfs and root", "power-off", "judging, to QEMU's exit",
            "after QEMU",
        ]  # fmt: skip
        assert sum(result.phases.values()) == pytest.approx(result.seconds, abs=0.01)
        assert result.phases["firmware"] > 0.5 and result.phases["key derivation"] > 0
    if name == "tampered-firmware":
        assert any("refused" in n for n in result.notes)
    if name == "refusal":
        assert "HARNESS-BOOTED" not in transcript
        assert "Failed to find any grub configuration" in transcript
    if name in ("foreign-disk", "search-hijack", "console-keys", "broken-kernel"):
        assert "HOST-GRUB-CFG" not in transcript and "grub>" not in transcript
        assert "HOST-KERNEL-RUNS" not in transcript
    if name == "foreign-disk":
        assert "Enter passphrase" not in transcript
    if scenarios.SCENARIOS[name].ending is verdicts.Ending.WIPES:
        # A valid table means no prompt: the area wiped, the guest powered off.
        assert "Enter passphrase" not in transcript and "HOST-GRUB-CFG" not in transcript
        assert "the guest powered off" in result.notes


def test_a_twin_of_the_owner_disk_is_refused_by_the_initramfs(
    firmware: ovmf.OvmfBuild, images: matrix.Images, accel: qemu.Accel, tmp_path: Path
) -> None:
    """The host attaches a byte copy of the owner's disk beside it (an older one would do
    as well: LUKS has no freshness). GRUB unlocks both with the secret; the kernel's
    initramfs finds two devices with the root's LUKS UUID and refuses to choose."""
    img = images.for_case("foreign-disk", LuksVariant.LUKS1)
    twin = tmp_path / "twin.img"
    shutil.copyfile(img.disk, twin)
    host = HostDisk(twin, Passphrase.read(img.passphrase_file), images.host_disk().boot)
    result = _boot("foreign-disk", img, firmware, accel, tmp_path / "boot", host_disk=host)
    assert not result.passed
    assert "the initramfs failing" in result.detail, result.detail
    assert "two devices carry LUKS UUID=" in result.transcript.read_text()
    assert "HARNESS-BOOTED" not in result.transcript.read_text()


ES_CASES = ("passwordless", "tampered-firmware", "replayed-secret")


@pytest.mark.parametrize("name", ES_CASES)
def test_simulated_sev_es(
    name: str, firmware: ovmf.OvmfBuild, images: matrix.Images, accel: qemu.Accel
) -> None:
    """An SEV-ES policy against the simulated element: two vCPUs' VMSAs in the digest,
    QEMU with the EPYC model and -smp 2; the owner's checks hold as for SEV."""
    img = images.for_case(name, LuksVariant.LUKS1)
    workdir = OUT / "boot" / f"{name}-es"
    result = _boot(name, img, firmware, accel, workdir, kind=LaunchKind.SIMULATED_ES)
    assert result.passed, result.detail
    assert any(n.startswith("SEV-ES: 2 vCPUs EPYC") for n in result.notes), result.notes


def test_a_hanging_guest_times_out_cleanly(
    firmware: ovmf.OvmfBuild,
    accel: qemu.Accel,
    tmp_path: Path,
) -> None:
    builder = tools_builder()
    img = build_image("no-kernel", LuksVariant.LUKS1, tmp_path / "img", IMAGE_CACHE, builder.tag)
    result = run_scenario(
        scenarios.SCENARIOS["passwordless"],
        Target.of(Firmware(ovmf.firmware(firmware), firmware.manifest.launch_digest), img),
        Machine(accel, timeout=20),
        tmp_path / "boot",
    )
    assert not result.passed and "within 20 s" in result.detail
    assert "this image has no kernel" in result.transcript.read_text()
    assert run.run(["pgrep", "-f", str(img.disk)], check=False).returncode == 1  # QEMU is gone
    assert [p.name for p in (tmp_path / "boot").iterdir()] == ["console.log"]  # private files gone


def test_parallel_runs_do_not_collide(
    firmware: ovmf.OvmfBuild,
    images: matrix.Images,
    accel: qemu.Accel,
    tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    img = images.for_case("passwordless", LuksVariant.LUKS1)

    def one(name: str, index: int) -> Result:
        return _boot(name, img, firmware, accel, tmp_path / f"run{index}")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, ["passwordless", "no-secret"], [1, 2]))
    assert all(r.passed for r in results), [r.detail for r in results]


def test_no_passphrase_anywhere_under_out(images: matrix.Images) -> None:
    """After the matrix: only the 0600 passphrase and proof key files themselves hold a
    passphrase or an owner's proof key."""
    every = [*images.owner.values(), images.host]
    keys = [img.disk.parent / proof.KEY_FILE for img in every]
    secrets = {img.passphrase_file.read_bytes() for img in every}
    secrets |= {key.read_bytes() for key in keys}
    allowed = {img.passphrase_file.resolve() for img in every} | {k.resolve() for k in keys}
    leaks = []
    # os.walk, and reads that tolerate a vanished file: other workers build and boot in
    # out/ meanwhile (git objects and run directories come and go).
    for top, _, names in os.walk(OUT):
        for name in names:
            path = Path(top) / name
            try:
                if path.is_symlink() or not path.is_file() or path.resolve() in allowed:
                    continue
                if name in ("passphrase", proof.KEY_FILE):
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
                    continue
                if path.stat().st_size > 256 * 1024 * 1024:
                    continue
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            leaks += [str(path) for s in secrets if s in data]
    assert leaks == []
    assert json.loads((OUT / "ovmf" / "manifest.json").read_text())["schema"]
    assert os.access(OUT, os.R_OK)


@pytest.fixture(scope="module")
def debian_kernel_image() -> Image:
    """The minimal image with Debian's kernel, whose busybox initramfs never opens the
    disk: after GRUB, nothing in the guest needs the volume key, so none may be left."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return build_image(
        "minimal",
        LuksVariant.LUKS1,
        OUT / "images" / f"test-{worker}-debian-kernel",
        IMAGE_CACHE,
        tools_builder().tag,
    )


@pytest.mark.parametrize("name", ["passwordless", "search-hijack"])
def test_nothing_outlives_grub_on_debians_kernel(
    name: str,
    debian_kernel_image: Image,
    images: matrix.Images,
    firmware: ovmf.OvmfBuild,
    accel: qemu.Accel,
    tmp_path: Path,
) -> None:
    """passwordless: the RAM verdict looks for both halves of the volume key (our kernel
    holds the key by design, so the matrix can only look for the passphrase), and finds
    neither once GRUB has handed over. search-hijack: the host's filesystem is never
    used and the owner's image finishes, since this initramfs never reads the root."""
    host = images.host_disk() if name == "search-hijack" else None
    result = _boot(name, debian_kernel_image, firmware, accel, tmp_path / "boot", host_disk=host)
    assert result.passed, result.detail
    if name == "passwordless":
        assert any("holds none of" in note and "volume key" in note for note in result.notes)
    else:
        assert "HARNESS-BOOTED" in result.transcript.read_text()
