"""patches/ovmf's grub.sh on its own, without Docker: the FAT memdisk it makes for
grub.cfg (embedded in grub.efi, so in the launch measurement) must not depend on the
build's clock, time zone or dosfstools version.

grub.sh comes from the pinned edk2 archive in the shared download cache (fetched in the
builder container when a build has not fetched it yet) with our series applied;
grub-mkimage is a stub that keeps a copy of the memdisk it is given.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from harness.components.trees import debian_fetcher
from harness.components.workspace import Component
from harness.errors import HarnessError
from harness.upstream import sources
from tests.conftest import IN_CI, SHARED_DOWNLOADS, tools_builder

pytestmark = pytest.mark.tools

GRUB_DIR = "OvmfPkg/AmdSev/Grub"
#: ``BS_VolID`` in a FAT12/FAT16 boot sector.
VOLUME_ID = struct.Struct("<39xI")
#: The id ``mkfs.msdos --invariant`` writes, and grub.sh's ``-i`` fallback.
FIXED_VOLUME_ID = 0x1234ABCD
#: FAT keeps file times in two-second steps: runs further apart than this would see
#: different times if the clock reached the image.
FAT_TIME_STEP = 2.1

STUB_MKIMAGE = """#!/bin/sh
# grub-mkimage stand-in: keep the memdisk (grub.sh removes it), write an empty image.
while [ $# -gt 0 ]; do
    case "$1" in
        -m) cp -- "$2" "$MEMDISK_COPY"; shift 2 ;;
        -o) : > "$2"; shift 2 ;;
        *) shift ;;
    esac
done
"""
STUB_OLD_MKFS = """#!/bin/sh
# mkfs.msdos as dosfstools before 4.2 answers: no --invariant (nor --help).
for arg in "$@"; do
    case "$arg" in
        --invariant|--help) echo "mkfs.msdos: unrecognized option '$arg'" >&2; exit 1 ;;
    esac
done
exec {real} "$@"
"""


@pytest.fixture(scope="module")
def grub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``OvmfPkg/AmdSev/Grub`` of the pinned edk2 archive, our series applied."""
    comp = Component.load("ovmf")
    cache = sources.DownloadCache(SHARED_DOWNLOADS)
    archive = cache.lookup(comp.pin)
    if archive is None:
        try:
            builder = tools_builder()
            archive = sources.fetch(comp.pin, cache, debian_fetcher(builder.tag)).archive
        except HarnessError as err:
            reason = f"{comp.pin.archive} is not downloaded and could not be: {err.message}"
            if IN_CI:
                pytest.fail(f"CI must not skip: {reason}", pytrace=False)
            pytest.skip(reason)
    assert archive is not None
    root = tmp_path_factory.mktemp("edk2")
    subprocess.run(
        ["tar", "-xf", str(archive), "-C", str(root), "--strip-components=1", "--wildcards",
         f"*/{GRUB_DIR}/*"],
        check=True,
    )  # fmt: skip
    for patch in comp.patches:
        subprocess.run(
            ["git", "apply", f"--include={GRUB_DIR}/*", str(patch.path)], cwd=root, check=True
        )
    return root / GRUB_DIR


def grub_sh(
    grub_dir: Path, tmp: Path, env: dict[str, str], old_mkfs: bool = False
) -> tuple[bytes, str]:
    """Run grub.sh as the edk2 build does (``sh grub.sh``); the memdisk and stderr."""
    stubs = tmp / "stubs"
    stubs.mkdir(exist_ok=True)
    for name in ("grub-mkimage", "grub2-mkimage"):
        (stubs / name).write_text(STUB_MKIMAGE)
    mkfs = stubs / "mkfs.msdos"
    mkfs.unlink(missing_ok=True)
    if old_mkfs:
        real = shutil.which("mkfs.msdos", path="/usr/sbin:/sbin:/usr/bin:/bin")
        assert real is not None
        mkfs.write_text(STUB_OLD_MKFS.format(real=real))
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    memdisk = tmp / "memdisk.fat"
    memdisk.unlink(missing_ok=True)
    (grub_dir / "grub.efi").unlink(missing_ok=True)  # grub.sh keeps a newer one
    done = subprocess.run(
        ["sh", str(grub_dir / "grub.sh")],
        env={
            "PATH": f"{stubs}:/usr/sbin:/sbin:/usr/bin:/bin",
            "HOME": str(tmp),
            "MEMDISK_COPY": str(memdisk),
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return memdisk.read_bytes(), done.stderr


def listing(tmp: Path, image: bytes) -> str:
    """``mdir`` of a FAT image: names, sizes and times as the file system holds them."""
    path = tmp / "listed.fat"
    path.write_bytes(image)
    return subprocess.run(
        ["mdir", "-i", str(path), "::"],
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_memdisk_depends_on_grub_cfg_alone(grub_dir: Path, tmp_path: Path) -> None:
    """Two runs, seconds apart and in time zones 24 hours apart, give the same bytes;
    grub.cfg is dated at the FAT epoch unless the caller sets SOURCE_DATE_EPOCH."""
    east, _ = grub_sh(grub_dir, tmp_path, {"TZ": "EAST-14"})
    time.sleep(FAT_TIME_STEP)
    west, _ = grub_sh(grub_dir, tmp_path, {"TZ": "WEST+10"})
    assert east == west
    (volume_id,) = VOLUME_ID.unpack_from(east)
    assert volume_id == FIXED_VOLUME_ID
    assert (grub_dir / "grub.cfg").read_bytes() in east
    assert "1980-01-01" in listing(tmp_path, east)
    dated, _ = grub_sh(grub_dir, tmp_path, {"SOURCE_DATE_EPOCH": "1700000000"})
    assert dated != east and "2023-11-14" in listing(tmp_path, dated)


def test_dosfstools_without_invariant_gets_a_fixed_volume_id(
    grub_dir: Path, tmp_path: Path
) -> None:
    """mkfs.msdos before dosfstools 4.2 has no --invariant: grub.sh warns and passes
    the volume id with -i. (Under the stub runs the host's mkfs.msdos, 4.2 in Debian 12,
    whose images differ only in that id: so the image is the same as with --invariant.)"""
    modern, quiet = grub_sh(grub_dir, tmp_path, {})
    old, warned = grub_sh(grub_dir, tmp_path, {}, old_mkfs=True)
    assert "lacks --invariant" not in quiet and "lacks --invariant" in warned
    (volume_id,) = VOLUME_ID.unpack_from(old)
    assert volume_id == FIXED_VOLUME_ID
    assert old == modern
