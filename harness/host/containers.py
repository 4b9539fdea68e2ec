"""Docker, through the SDK: base images, builder images, and build containers.

* The base image (``debian:SUITE``, as the configuration says) is pulled when a
  registry answers; otherwise it is made with debootstrap and ``docker import``, and
  we say so.
* Builder images are built from the Dockerfile a caller names and tagged with
  the hash of the Dockerfile and the base image id, so an unchanged Dockerfile is never
  rebuilt.
* Containers run as context managers: whatever happens (success, failure, timeout,
  Ctrl-C), the container is stopped and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from harness import run
from harness.errors import CommandError, InfrastructureError, PrerequisiteError
from harness.host.engine import docker_client

log = logging.getLogger(__name__)

DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: debootstrap of a minbase bookworm takes 2-4 minutes here; allow for a slow mirror.
DEBOOTSTRAP_TIMEOUT = 1800.0
#: Seconds a container gets to stop on SIGTERM before it is killed.
STOP_GRACE = 10


def _has_image(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base(base: str, cache: Path | None = None) -> str:
    """Make *base* available locally; return its image id.

    Raises:
        PrerequisiteError: the image can neither be pulled nor bootstrapped.
    """
    client = docker_client()
    if not _has_image(client, base):
        try:
            log.info("pulling %s", base)
            client.images.pull(base)
        except docker.errors.APIError as err:
            log.info(
                "could not pull %s (%s); building it with debootstrap",
                base,
                str(err).splitlines()[0][:120],
            )
            bootstrap_base(client, base, cache)
    return str(client.images.get(base).id)


def bootstrap_base(client: docker.DockerClient, base: str, cache: Path | None) -> None:
    """Create ``debian:SUITE`` with debootstrap and import it under that name.

    Raises:
        PrerequisiteError: *base* is not ``debian:SUITE``, we are not root, or
            debootstrap is missing.
    """
    repo, _, suite = base.partition(":")
    if repo != "debian" or not suite:
        raise PrerequisiteError(
            f"{base} cannot be pulled, and only debian:SUITE images can be bootstrapped."
        )
    if os.geteuid() != 0:
        raise PrerequisiteError(
            f"{base} cannot be pulled and debootstrap needs root.",
            hint=f"as root: ./inv doctor --fix, or docker pull {base} where a registry is "
            "reachable",
        )
    if run.which("debootstrap") is None:
        raise PrerequisiteError("debootstrap is not installed.", hint="apt-get install debootstrap")
    # On a first run the workspace's cache does not exist yet.
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="harness-debootstrap-", dir=cache))
    try:
        root = work / "root"
        started = time.monotonic()
        run.run(
            ["debootstrap", "--variant=minbase", suite, str(root), DEBIAN_MIRROR],
            timeout=DEBOOTSTRAP_TIMEOUT,
        )
        tarball = work / "root.tar"
        run.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), "."])
        with open(tarball, "rb") as src:
            client.api.import_image(src=src, repository=repo, tag=suite)
        log.info("bootstrapped %s in %.0f s", base, time.monotonic() - started)
    except CommandError as err:
        raise PrerequisiteError(f"debootstrap of {base} failed.", hint=err.output_tail) from err
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class BuilderImage:
    tag: str
    id: str
    dockerfile: Path


def builder_tag(dockerfile: Path, base_id: str) -> str:
    digest = hashlib.sha256(dockerfile.read_bytes() + base_id.encode()).hexdigest()[:16]
    return f"harness-{dockerfile.name.removeprefix('Dockerfile.')}:{digest}"


def ensure_builder(dockerfile: Path, base: str, cache: Path | None = None) -> BuilderImage:
    """Build *dockerfile* (``Dockerfile.NAME``, its directory the context) FROM *base*
    unless that exact image exists; *cache* keeps debootstrap's packages.

    Raises:
        InfrastructureError: the image build fails (its last lines are shown).
    """
    base_id = ensure_base(base, cache)
    name = dockerfile.name.removeprefix("Dockerfile.")
    tag = builder_tag(dockerfile, base_id)
    client = docker_client()
    if not _has_image(client, tag):
        log.info("building builder image %s", tag)
        lines: list[str] = []
        try:
            for chunk in client.api.build(
                path=str(dockerfile.parent),
                dockerfile=dockerfile.name,
                tag=tag,
                buildargs={"BASE": base},
                network_mode="host",
                rm=True,
                forcerm=True,
                decode=True,
            ):
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        lines.append(line)
                        log.debug("%s", line)
                if "error" in chunk:
                    raise InfrastructureError(
                        f"Building the {name} builder image failed: {chunk['error'].strip()}",
                        hint="\n".join(lines[-run.TAIL_LINES :]),
                    )
        except docker.errors.APIError as err:
            raise InfrastructureError(f"Docker refused to build {tag}: {err}") from err
    return BuilderImage(tag, str(client.images.get(tag).id), dockerfile)


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


def _user() -> str:
    return f"{os.getuid()}:{os.getgid()}"


@contextlib.contextmanager
def container(
    image: str,
    command: list[str],
    *,
    mounts: list[Mount],
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    as_root: bool = False,
    labels: Mapping[str, str] | None = None,
) -> Iterator[Container]:
    """A started container that is always stopped and removed on the way out.

    Runs as the calling user's uid:gid unless *as_root*, with host networking (there is
    no bridge network on every host we run on).
    """
    client = docker_client()
    ctr = client.containers.create(
        image,
        command,
        user="0:0" if as_root else _user(),
        environment=dict(env or {}),
        working_dir=workdir,
        network_mode="host",
        volumes={
            str(m.source.resolve()): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
            for m in mounts
        },
        labels={"harness": "build", **(labels or {})},
    )
    try:
        ctr.start()
        yield ctr
    finally:
        with contextlib.suppress(docker.errors.APIError):
            ctr.stop(timeout=STOP_GRACE)
        with contextlib.suppress(docker.errors.APIError):
            ctr.remove(force=True)


def run_logged(
    image: str,
    command: list[str],
    *,
    mounts: list[Mount],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    as_root: bool = False,
    on_line: Callable[[str], None] | None = None,
    what: str = "build",
    labels: Mapping[str, str] | None = None,
) -> None:
    """Run *command* in a container, streaming its output to *log_path* (and *on_line*).

    Raises:
        CommandError: non-zero exit, with the last 40 lines and the log path.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    with (
        open(log_path, "w", encoding="utf-8") as out,
        container(
            image, command, mounts=mounts, env=env, workdir=workdir, as_root=as_root, labels=labels
        ) as ctr,
    ):
        pending = ""
        for chunk in ctr.logs(stream=True, follow=True):
            pending += chunk.decode(errors="replace")
            *lines, pending = pending.split("\n")
            for line in lines:
                out.write(line + "\n")
                tail.append(line)
                del tail[: -run.TAIL_LINES]
                if on_line:
                    on_line(line)
        if pending:
            out.write(pending + "\n")
            tail.append(pending)
        status = ctr.wait().get("StatusCode", -1)
    if status != 0:
        raise CommandError(
            f"The {what} failed with exit status {status}; full log: {log_path}",
            argv=command,
            returncode=status,
            output_tail="\n".join(tail[-run.TAIL_LINES :]),
        )
