"""The Docker engine: a client for it, and starting dockerd when none runs.

Below the containers and the host checks; it knows nothing of builds or QEMU.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import docker
import docker.errors

from harness import run
from harness.errors import PrerequisiteError

log = logging.getLogger(__name__)

DOCKERD_START_TIMEOUT = 60.0
DOCKERD_LOG = Path("/var/log/harness-dockerd.log")


def docker_client(timeout: float = 10) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST (or the default socket) names.

    Raises:
        PrerequisiteError: the engine does not answer.
    """
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as err:
        raise PrerequisiteError(
            "The Docker engine is not reachable.",
            hint="start it (dockerd --iptables=false --bridge=none) or run ./inv doctor as root",
        ) from err
    return client


def start_docker() -> docker.DockerClient:
    """Start dockerd in the background (overlay2, then vfs) and wait for it.

    Raises:
        PrerequisiteError: not root, dockerd missing, or it never answers.
    """
    if os.geteuid() != 0 or os.environ.get("DOCKER_HOST"):
        raise PrerequisiteError(
            "The Docker engine is not running.",
            hint="ask an administrator to start it (systemctl start docker)",
        )
    for driver in ("overlay2", "vfs"):
        log.info("starting dockerd (storage driver %s), log in %s", driver, DOCKERD_LOG)
        proc = run.spawn(
            ["dockerd", "--iptables=false", "--bridge=none", f"--storage-driver={driver}"],
            log_path=DOCKERD_LOG,
        )
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                return docker_client(timeout=5)
            except PrerequisiteError:
                time.sleep(1)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        log.info("dockerd with %s did not come up (exit %s)", driver, proc.returncode)
    raise PrerequisiteError(
        "dockerd would not start with overlay2 or vfs.", hint=f"see {DOCKERD_LOG}"
    )
