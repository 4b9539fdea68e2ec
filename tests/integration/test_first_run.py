"""The README's first command on a machine that never ran it.

A Docker engine of its own (private data root: no ``debian:bookworm``, no builder image),
a copy of the tree with no ``out/`` and no ``.venv``, and a HOME with no ``~/.cache``:
``./inv build-ovmf`` must make the base image with debootstrap, the builder image, GRUB
and OVMF, and the firmware must be the same bytes the main workspace built (the builds
are reproducible). This is the path CI never took while every machine had the images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import run
from harness.components import ovmf
from harness.components.workspace import Workspace
from tests.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.tools, pytest.mark.slow]

#: A fresh dockerd answers within seconds; allow for a loaded machine.
DOCKERD_START = 60.0
#: debootstrap, the builder image, GRUB and OVMF, cold, on 2 cores: about ten minutes.
FIRST_BUILD_TIMEOUT = 2400.0


@contextlib.contextmanager
def private_engine(top: Path) -> Iterator[str]:
    """A dockerd with its own data root and socket, stopped and removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a private Docker engine needs root")
    sock = top / "docker.sock"
    log = open(top / "dockerd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            "dockerd",
            "--iptables=false",
            "--bridge=none",
            f"--data-root={top / 'data'}",
            f"--exec-root={top / 'exec'}",
            f"--pidfile={top / 'dockerd.pid'}",
            f"--host=unix://{sock}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + DOCKERD_START
        env = {**os.environ, "DOCKER_HOST": host}
        while run.run(["docker", "info"], check=False, env=env).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                tail = (top / "dockerd.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"the private dockerd did not start:\n{tail}")
            time.sleep(0.5)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        unmount_under(top)
        # Image layers are owned by root and may be mounted read-only for a moment.
        shutil.rmtree(top / "data", ignore_errors=True)


def unmount_under(top: Path) -> None:
    """Unmount what dockerd left mounted under *top* (its network namespace file)."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(f"{top}/")), reverse=True):
        run.run(["umount", "-l", point], check=False)


def clean_copy(dest: Path) -> Path:
    """The tracked files of this tree as they are now (what a clean clone holds)."""
    files = run.run(["git", "ls-files", "-z"], cwd=ROOT).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if not src.exists():  # deleted in the working tree
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


@pytest.mark.long
def test_build_ovmf_on_a_fresh_machine(tmp_path: Path) -> None:
    tree = clean_copy(tmp_path / "clone")
    home = tmp_path / "home"
    home.mkdir()
    assert not (tree / "out").exists() and not (tree / ".venv").exists()
    # dockerd's sockets (containerd's among them) must fit in 108 bytes: pytest's
    # directories under xdist are too deep for that.
    engine = Path(tempfile.mkdtemp(prefix="harness-engine-"))
    try:
        _build_on(tree, home, engine)
    finally:
        shutil.rmtree(engine, ignore_errors=True)
    fresh = json.loads((tree / "out" / "ovmf" / "manifest.json").read_text())
    main = ovmf.build_ovmf(Workspace(ROOT / "out"))
    assert fresh["output"]["sha256"] == main.manifest.output.sha256


def _build_on(tree: Path, home: Path, engine: Path) -> None:
    with private_engine(engine) as host:
        assert (
            run.run(["docker", "images", "-q"], env={**os.environ, "DOCKER_HOST": host}).stdout
            == b""
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VIRTUAL_ENV", "PYTEST", "XDG_", "HARNESS_"))
        }
        env |= {"DOCKER_HOST": host, "HOME": str(home)}
        done = run.run(
            [str(tree / "inv"), "build-ovmf"],
            cwd=tree,
            env=env,
            input=b"",
            timeout=FIRST_BUILD_TIMEOUT,
            check=False,
        )
        output = (done.stdout + (done.stderr or b"")).decode(errors="replace")
        assert done.returncode == 0, output[-4000:]
        assert "Traceback" not in output
        # Every build container is gone once the build is done (the engine is ours alone).
        left = run.run(["docker", "ps", "-aq"], env={**os.environ, "DOCKER_HOST": host}).stdout
        assert left == b"", left
        assert "bootstrapped debian:bookworm" in output or "debootstrap" in output
