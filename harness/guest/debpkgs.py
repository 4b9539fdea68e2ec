"""The Debian packages an image is made from, fetched (no dependencies) with apt in
the builder container and unpacked, once per machine."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from harness import run
from harness.host import containers

log = logging.getLogger(__name__)


def _publish(tmp: Path, dest: Path) -> None:
    """Rename the finished download *tmp* to *dest*; when another build published it
    first, theirs stays (it may be in use) and *tmp* is left for the caller to remove."""
    try:
        tmp.rename(dest)
    except OSError:
        if not dest.is_dir():  # not another build's copy: a real failure
            raise


def fetch_packages(packages: tuple[str, ...], cache: Path, builder: str) -> Path:
    """Download *packages* (no dependencies) with apt in the builder container; unpack
    them. Safe when several builds ask at once (parallel test workers, the nightly): each
    downloads into its own directory and the first to finish publishes it."""
    key = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:16]
    # Keyed by the package list alone: recipes built on one base share the download.
    unpacked = cache / f"packages-{key}"
    if unpacked.is_dir():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    debs = Path(tempfile.mkdtemp(prefix=f"packages-{key}.debs-", dir=cache))
    # Metapackages (linux-image-cloud-amd64) are resolved to the package they name.
    script = (
        "set -e; apt-get -o Acquire::Check-Valid-Until=false update -qq >/dev/null; cd /debs; "
        "for p in " + " ".join(packages) + "; do "
        "real=$(apt-cache depends \"$p\" | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); "
        'apt-get download -qq "${real:-$p}"; done; '
        f"chown -R {os.getuid()}:{os.getgid()} /debs"
    )
    tmp = Path(tempfile.mkdtemp(prefix=f"packages-{key}.tmp-", dir=cache))
    try:
        containers.run_logged(
            builder,
            ["bash", "-c", script],
            mounts=[containers.Mount(debs, "/debs")],
            log_path=cache / "apt.log",
            as_root=True,
            what="package download",
        )
        for deb in sorted(debs.glob("*.deb")):
            run.run(["dpkg-deb", "-x", str(deb), str(tmp)])
        _publish(tmp, unpacked)
    finally:
        shutil.rmtree(debs, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return unpacked


#: What the built kernel's initramfs runs to unlock the root: Debian's cryptsetup from
#: the tools builder, with every library its dynamic linker loads.
UNLOCK_PACKAGES = ("cryptsetup-bin",)


UNLOCK_PROGRAMS = ("cryptsetup",)


#: The closure's list of files, and the Debian versions it came from.
CLOSURE_FILES = "files.txt"


CLOSURE_PACKAGES = "packages.txt"


def fetch_unlock_tools(cache: Path, builder: str) -> Path:
    """Debian's cryptsetup and its shared libraries, at their paths under the returned
    directory, as the builder's own ``ldd`` resolves them (so the set is exactly what
    the dynamic linker loads, never a guess). Cached per builder image (its tag names
    its Dockerfile and base)."""
    key = hashlib.sha256(
        json.dumps([builder, UNLOCK_PACKAGES, UNLOCK_PROGRAMS]).encode()
    ).hexdigest()[:16]
    done = cache / f"unlock-{key}"
    if (done / CLOSURE_FILES).is_file():
        return done
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="unlock-", dir=cache))
    script = (
        "set -e; apt-get -o Acquire::Check-Valid-Until=false update -qq >/dev/null; "
        "apt-get install -y -qq --no-install-recommends " + " ".join(UNLOCK_PACKAGES) +
        " >/dev/null; : > /tmp/files; "
        "for prog in " + " ".join(UNLOCK_PROGRAMS) + "; do "
        'bin=$(command -v "$prog"); echo "$bin" >> /tmp/files; '
        "ldd \"$bin\" | awk '$2 == \"=>\" && $3 ~ /^\\// {print $3} "
        "$1 ~ /^\\// {print $1}' >> /tmp/files; done; "
        "sort -u /tmp/files > /out/" + CLOSURE_FILES + "; "
        'while read -r f; do mkdir -p "/out$(dirname "$f")"; cp -L "$f" "/out$f"; done '
        "< /out/" + CLOSURE_FILES + "; "
        "dpkg-query -W -f='${Package} ${Version}\\n' " + " ".join(UNLOCK_PACKAGES) +
        " > /out/" + CLOSURE_PACKAGES + "; "
        f"chown -R {os.getuid()}:{os.getgid()} /out"
    )  # fmt: skip
    try:
        containers.run_logged(
            builder,
            ["bash", "-c", script],
            mounts=[containers.Mount(tmp, "/out")],
            log_path=cache / "unlock.log",
            as_root=True,
            what="cryptsetup for the initramfs",
        )
        _publish(tmp, done)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done
