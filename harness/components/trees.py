"""A component's source: its pin and series, the tree they make, and following
upstream through Debian's source packages."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.components.workspace import Component, Workspace
from harness.config import PATCHES
from harness.errors import InfrastructureError, InputError
from harness.host import containers
from harness.timing import stage
from harness.upstream import patchset, sources

log = logging.getLogger(__name__)


def debian_fetcher(image: str) -> sources.DebianFetcher:
    """``apt-get source --download-only`` in the builder container (as root, host network).

    Debian's mirrors serve suites whose Release files may be past Valid-Until on a
    snapshot mirror, so that check is off; the pinned sha256 is what we trust.
    """

    def fetch(route: sources.Route, archive: str, where: Path) -> Path:
        script = (
            "apt-get -o Acquire::Check-Valid-Until=false update -qq >/dev/null 2>&1 || true; "
            f"cd /dl && (apt-get -o Acquire::Check-Valid-Until=false source --download-only "
            f"'{route.package}={route.version}' 2>&1 || true); "
            f"chown -R {os.getuid()}:{os.getgid()} /dl"
        )
        with containers.container(
            image,
            ["bash", "-c", script],
            mounts=[containers.Mount(where, "/dl")],
            as_root=True,
        ) as ctr:
            status = ctr.wait().get("StatusCode", -1)
            output = ctr.logs().decode(errors="replace")
        got = where / archive
        if not got.is_file():
            reason = next(
                (ln for ln in output.splitlines() if ln.startswith("E:")), f"exit {status}"
            )
            raise InfrastructureError(f"apt-get source did not deliver {archive}: {reason}")
        return got

    return fetch


@dataclass(frozen=True)
class DebianIndex:
    """What apt in the builder knows of a source package: the Sources paragraphs of
    every version, and where each version's files would be downloaded from."""

    text: str
    uris: dict[str, dict[str, str]]  # Debian version -> file name -> URI


URI_LINE = re.compile(r"^'(?P<uri>[^']+)' (?P<name>\S+) \d+ ")


def debian_index(image: str, package: str) -> DebianIndex:
    """``apt-cache showsrc`` and ``apt-get source --print-uris`` of every version of
    *package*, in one run of the builder container."""
    script = (
        "apt-get -o Acquire::Check-Valid-Until=false update -qq >/dev/null 2>&1 || true; "
        f"apt-cache showsrc --only-source '{package}' > /tmp/index || exit 1; cat /tmp/index; "
        "for v in $(sed -n 's/^Version: //p' /tmp/index | sort -u); do "
        f'echo "=== $v"; apt-get source --print-uris -qq \'{package}\'="$v" 2>/dev/null; done'
    )
    with containers.container(image, ["bash", "-c", script], mounts=[], as_root=True) as ctr:
        status = ctr.wait().get("StatusCode", -1)
        output = ctr.logs(stderr=False).decode(errors="replace")
    if status != 0 or not output.strip():
        raise InfrastructureError(f"apt-cache showsrc {package} failed (exit {status}).")
    text, _, rest = output.partition("\n=== ")
    uris: dict[str, dict[str, str]] = {}
    version = ""
    for line in ("=== " + rest).splitlines() if rest else []:
        if line.startswith("=== "):
            version = line[4:].strip()
            uris[version] = {}
        elif m := URI_LINE.match(line):
            uris[version][m["name"]] = m["uri"]
    return DebianIndex(text, uris)


def follow_upstream(
    names: tuple[str, ...],
    image: str,
    patches_root: Path = PATCHES,
    version: str | None = None,
    notes: list[str] | None = None,
) -> tuple[sources.Pin, ...]:
    """The pins of *names* moved to *version*, or to the newest Debian source version
    whose archive the mirror really serves (a suite's index can list a version before
    its files reach every mirror). What was passed over is appended to *notes*.

    Raises:
        ConfigError: a pin without a Debian route, or no such *version*.
        InfrastructureError: apt or the mirror could not be asked, or serves none.
    """
    moved = []
    for name in names:
        pin = Component.load(name, patches_root).pin
        route = sources.debian_route(pin)
        assert route.package is not None
        index = debian_index(image, route.package)
        candidates = sources.debian_candidates(pin, index.text, version)
        if version is not None:
            moved.append(candidates[0])
            continue
        for cand in candidates:
            debian = sources.debian_version(cand) or ""
            uri = index.uris.get(debian, {}).get(cand.archive)
            if uri and sources.url_exists(uri):
                moved.append(cand)
                break
            note = (
                f"{route.package} {debian} is listed, but the mirror does not serve {cand.archive}"
            )
            log.warning("%s; trying the next older version", note)
            if notes is not None:
                notes.append(note)
        else:
            raise InfrastructureError(f"The mirror serves no {route.package} source version.")
    return tuple(moved)


@dataclass(frozen=True)
class SourceTree:
    """A prepared source tree: its base commit (the unpacked source), how it was
    obtained this time (``origin``: a route, or the kept work tree), and the route that
    delivered its bytes and what they were checked against (None for a local tree, or
    for a work tree unpacked before that was recorded)."""

    path: Path
    base: str
    origin: str
    patched: bool
    provenance: sources.Provenance | None = None


def prepare_tree(
    component: Component,
    ws: Workspace,
    builder: str,
    *,
    local_tree: Path | None = None,
    apply: bool = True,
) -> SourceTree:
    """The component's source at ``out/work/<name>/src``, series applied.

    The tree is kept between builds: when the pinned source is unchanged only the
    series is re-applied (git resets just the files it touches), so the build tree
    stays warm. A patch author's ``local_tree`` is copied in instead of the pin.

    Raises:
        PatchError: a patch does not apply.
        ChecksumError, InfrastructureError: the source could not be fetched.
    """
    work = ws.layout.work(component.name)
    src = work / "src"
    stamp = work / "base.json"
    if local_tree is not None:
        if not (local_tree / ".").is_dir():
            raise InputError(f"--tree {local_tree} is not a directory.")
        want = {"local": str(local_tree.resolve()), "time": time.time()}
    else:
        # A development branch's pin has no archive: its commit is what it is.
        source = component.pin.sha256 or f"git {component.pin.commit}"
        want = {"sha256": source, "quirks": [q.__dict__ for q in component.pin.quirks]}
    have = json.loads(stamp.read_text()) if stamp.exists() else {}
    provenance: sources.Provenance | None = None
    if (
        local_tree is not None
        or {k: have.get(k) for k in want} != want
        or not (src / ".git").is_dir()
    ):
        shutil.rmtree(work, ignore_errors=True)
        src.mkdir(parents=True)
        if local_tree is not None:
            with stage(f"{component.name} unpack"):
                sources.unpack(sources.Fetched(checkout=local_tree, route="local tree"), src)
            origin = f"local tree {local_tree}"
        else:
            with stage(f"{component.name} fetch"):
                fetched = sources.fetch(component.pin, ws.downloads, debian_fetcher(builder))
            log.info("unpacking %s (%s)", component.pin.archive, fetched.route)
            with stage(f"{component.name} unpack"):
                sources.unpack(fetched, src)
                for line in sources.apply_quirks(component.pin, src):
                    log.info("quirk: %s", line)
            origin = fetched.route
            provenance = fetched.provenance
        with stage(f"{component.name} base commit"):
            base = patchset.commit_base(
                src, f"{component.pin.name} {component.pin.version} ({origin})"
            )
        # The provenance rides along in the stamp, but is no part of the comparison:
        # the same pin is the same tree, whichever route delivered it.
        stamp.write_text(
            json.dumps({**want, "provenance": provenance.to_json() if provenance else None})
        )
    else:
        base = patchset.git(src, "rev-parse", "harness-base").strip()
        origin = "work tree"
        provenance = sources.Provenance.from_json(have.get("provenance"))
    with stage(f"{component.name} git am"):
        patchset.apply_series(src, list(component.patches) if apply else [])
    return SourceTree(src, base, origin, apply, provenance)


def work_tree_provenance(ws: Workspace, component: Component) -> sources.Provenance | None:
    """How the bytes of the component's work tree were obtained and checked, when that
    tree is of the component's pin (a cached build's tree may since have been replaced
    by another pin's or a local tree)."""
    stamp = ws.layout.work(component.name) / "base.json"
    try:
        have = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    source = component.pin.sha256 or f"git {component.pin.commit}"
    if not isinstance(have, dict) or have.get("sha256") != source:
        return None
    return sources.Provenance.from_json(have.get("provenance"))
