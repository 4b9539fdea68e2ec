"""Pinned upstream sources: load the pin, fetch the bytes, verify, cache, unpack.

A pin (``patches/<component>/upstream.toml``) names a version, the archive file and its
sha256, and the ways to get those bytes, tried in order:

* ``debian``: ``apt-get source --download-only PKG=VERSION`` inside the builder
  container. Only the orig tarball is needed, so apt failing on the .dsc is tolerated
  when the tarball arrived and its sha256 matches.
* ``tarball``: an upstream URL.
* ``git``: a clone of ``url`` at ``tag`` (with submodules when asked). A checkout has
  no archive to hash, so the route must name the ``commit`` the tag resolves to, and the
  checked-out commit is compared with it: tags can be moved, commits cannot.

A pin may also name upstream's development branch (``[master]``: ``url``, ``branch``,
``commit``), for ``--upstream master``: a clone of the branch, checked to contain the
commit, checked out at it. Such a pin has no archive; the commit is its identity.

Archives land in a content-addressed download cache: ``downloads/<sha256>/<file>``. A
wrong sha256 is a hard error naming the file and both hashes, and nothing is cached.
Whatever the route, what it delivered was checked, and :class:`Provenance` says how.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
import shutil
import tempfile
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian import deb822, debian_support

from harness import run
from harness.errors import ChecksumError, CommandError, ConfigError, InfrastructureError, InputError

log = logging.getLogger(__name__)

#: Generous: the edk2 orig tarball is 30 MB and mirrors can be slow.
DOWNLOAD_TIMEOUT = 600.0


class RouteKind(enum.StrEnum):
    DEBIAN = "debian"
    TARBALL = "tarball"
    GIT = "git"


@dataclass(frozen=True)
class Route:
    """One way to obtain the pinned source."""

    kind: RouteKind
    url: str | None = None
    tag: str | None = None
    commit: str | None = None
    submodules: bool = False
    package: str | None = None
    version: str | None = None
    #: A development branch that must contain ``commit`` (instead of a tag).
    branch: str | None = None

    def describe(self) -> str:
        if self.kind is RouteKind.DEBIAN:
            return f"Debian source package {self.package}={self.version}"
        if self.kind is RouteKind.GIT and self.branch:
            return f"git {self.url} branch {self.branch} at {self.commit}"
        if self.kind is RouteKind.GIT:
            return f"git {self.url} at {self.tag}"
        return f"{self.url}"


@dataclass(frozen=True)
class Provenance:
    """Where a source tree's bytes came from and what they were checked against: the
    archive's sha256 (the tarball and Debian routes) or the commit (the git route)."""

    route: str
    sha256: str | None = None
    commit: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"route": self.route, "sha256": self.sha256, "commit": self.commit}

    @classmethod
    def from_json(cls, data: object) -> Provenance | None:
        """The record :meth:`to_json` wrote, or None for anything else (a stamp written
        before provenance was recorded)."""
        if not isinstance(data, dict) or not isinstance(data.get("route"), str):
            return None
        sha, commit = data.get("sha256"), data.get("commit")
        return cls(
            data["route"],
            sha if isinstance(sha, str) else None,
            commit if isinstance(commit, str) else None,
        )


@dataclass(frozen=True)
class Quirk:
    """A fix-up applied to the unpacked tree before the series, as data.

    ``fill-empty-dir``: when ``path`` is missing or empty, copy ``from`` into it.
    """

    kind: str
    path: str
    source: str


@dataclass(frozen=True)
class Pin:
    component: str
    name: str
    version: str
    #: The archive and its sha256; both empty for a development branch's pin, whose
    #: only route is git and whose identity is the commit.
    archive: str
    sha256: str
    routes: tuple[Route, ...]
    quirks: tuple[Quirk, ...]

    @property
    def commit(self) -> str | None:
        """The upstream commit of this version, as the git route pins it (None without
        a git route, as for a pin moved to another Debian version)."""
        return next((r.commit for r in self.routes if r.kind is RouteKind.GIT), None)


QUIRK_KINDS = ("fill-empty-dir",)


def _req(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty string.")
    return value


#: A full SHA-1 commit id: an abbreviation could become ambiguous, and then be resolved
#: to another commit.
COMMIT = re.compile(r"[0-9a-f]{40}")


def _commit(table: dict[str, Any], where: str) -> str:
    value = table.get("commit")
    if value is None:
        raise ConfigError(
            f"{where}: a git route needs the 'commit' its tag resolves to, "
            "since a tag can be moved."
        )
    if not isinstance(value, str) or not COMMIT.fullmatch(value):
        raise ConfigError(f"{where}: 'commit' must be the 40 lowercase hex digits of a commit.")
    return value


def load_pin(path: Path, component: str | None = None) -> Pin:
    """Read ``upstream.toml``.

    Raises:
        ConfigError: missing file, bad TOML, missing keys or unknown kinds.
    """
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path} does not exist.") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}.") from err
    sha = _req(data, "sha256", str(path)).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ConfigError(f"{path}: sha256 must be 64 hex digits.")
    routes = []
    for i, raw in enumerate(data.get("source", [])):
        where = f"{path} source #{i + 1}"
        try:
            kind = RouteKind(raw.get("kind"))
        except ValueError as err:
            raise ConfigError(f"{where}: kind must be one of debian, tarball, git.") from err
        if kind is RouteKind.DEBIAN:
            route = Route(
                kind, package=_req(raw, "package", where), version=_req(raw, "version", where)
            )
        elif kind is RouteKind.TARBALL:
            route = Route(kind, url=_req(raw, "url", where))
        else:
            route = Route(
                kind,
                url=_req(raw, "url", where),
                tag=_req(raw, "tag", where),
                commit=_commit(raw, where),
                submodules=bool(raw.get("submodules", False)),
            )
        routes.append(route)
    if not routes:
        raise ConfigError(f"{path}: no [[source]] says where to get the archive.")
    quirks = []
    for i, raw in enumerate(data.get("quirk", [])):
        where = f"{path} quirk #{i + 1}"
        kind_name = _req(raw, "kind", where)
        if kind_name not in QUIRK_KINDS:
            raise ConfigError(f"{where}: unknown kind {kind_name!r}.")
        quirks.append(Quirk(kind_name, _req(raw, "path", where), _req(raw, "from", where)))
    return Pin(
        component=component or path.parent.name,
        name=_req(data, "name", str(path)),
        version=_req(data, "version", str(path)),
        archive=_req(data, "archive", str(path)),
        sha256=sha,
        routes=tuple(routes),
        quirks=tuple(quirks),
    )


def load_master(path: Path, component: str | None = None) -> Pin | None:
    """The pin of upstream's development branch that ``upstream.toml``'s ``[master]``
    names (None when it names none): git only, at the commit, with the release pin's
    quirks.

    Raises:
        ConfigError: as :func:`load_pin`, or a ``[master]`` without url, branch or a full
            commit.
    """
    release = load_pin(path, component)
    raw = tomllib.loads(path.read_text()).get("master")
    if raw is None:
        return None
    where = f"{path} [master]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table.")
    route = Route(
        RouteKind.GIT,
        url=_req(raw, "url", where),
        branch=_req(raw, "branch", where),
        commit=_commit(raw, where),
        submodules=bool(raw.get("submodules", False)),
    )
    assert route.commit is not None
    return Pin(
        component=release.component,
        name=release.name,
        version=f"{route.branch} {route.commit[:12]}",
        archive="",
        sha256="",
        routes=(route,),
        quirks=release.quirks,
    )


#: Debian repacks some upstream tarballs (``+ds``, ``+dfsg``); the upstream version is
#: what comes before that suffix.
REPACK_SUFFIX = re.compile(r"\+(?:ds|dfsg)\d*$")


def debian_candidates(pin: Pin, sources_index: str, version: str | None = None) -> list[Pin]:
    """The pin moved to each version of its Debian source package, newest first: every
    version apt knows, or those matching *version* (a Debian version such as ``2.12-9``,
    or an upstream one such as ``2.12``).

    *sources_index* is ``apt-cache showsrc --only-source PACKAGE`` output (Debian's
    Sources format, one paragraph per version known to apt). Each pin's sha256 is the
    one Debian's signed index gives for the orig tarball, so fetching it is checked like
    any pin; the pin's quirks are kept.

    Raises:
        ConfigError: the pin has no Debian route, or apt knows no such *version*.
        InfrastructureError: the index does not know the package.
    """
    route = debian_route(pin)
    records = [
        p
        for p in deb822.Sources.iter_paragraphs(sources_index, use_apt_pkg=False)
        if p.get("Package") == route.package and "Version" in p
    ]
    if not records:
        raise InfrastructureError(f"apt knows no source package {route.package}.")
    if version is not None:
        records = [p for p in records if version in (p["Version"], _upstream(p["Version"]))]
        if not records:
            raise ConfigError(f"Debian has no {route.package} source version {version}.")
    records.sort(key=lambda p: debian_support.Version(p["Version"]), reverse=True)
    moved = []
    for record in records:
        orig = next(
            (
                (f["name"], f["sha256"])
                for f in record.get("Checksums-Sha256", [])
                if re.search(r"\.orig\.tar\.\w+$", f["name"])
            ),
            None,
        )
        if orig is None:
            continue  # a native package version: nothing upstream to build
        moved.append(
            Pin(
                component=pin.component,
                name=pin.name,
                version=_upstream(record["Version"]),
                archive=orig[0],
                sha256=orig[1],
                routes=(Route(RouteKind.DEBIAN, package=route.package, version=record["Version"]),),
                quirks=pin.quirks,
            )
        )
    if not moved:
        raise InfrastructureError(f"No {route.package} source version lists an orig tarball.")
    return moved


def _upstream(debian_version: str) -> str:
    """``10.0.13`` from ``1:10.0.13+ds-0+deb13u1``."""
    return REPACK_SUFFIX.sub("", debian_support.Version(debian_version).upstream_version or "")


def debian_route(pin: Pin) -> Route:
    """The pin's Debian source package route.

    Raises:
        ConfigError: it has none.
    """
    route = next((r for r in pin.routes if r.kind is RouteKind.DEBIAN), None)
    if route is None or route.package is None:
        raise ConfigError(f"The {pin.component} pin has no Debian source route to follow.")
    return route


def debian_version(pin: Pin) -> str | None:
    """The Debian source version a pin names, if it has a Debian route."""
    return next((r.version for r in pin.routes if r.kind is RouteKind.DEBIAN), None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class DownloadCache:
    """``root/<sha256>/<file>``: an entry exists only once its hash was checked."""

    root: Path

    def path(self, pin: Pin) -> Path:
        return self.root / pin.sha256 / pin.archive

    def lookup(self, pin: Pin) -> Path | None:
        p = self.path(pin)
        return p if p.is_file() else None

    def store(self, pin: Pin, candidate: Path, origin: str) -> Path:
        """Verify *candidate* against the pin and move it into the cache.

        Raises:
            ChecksumError: the hash differs; *candidate* is deleted, nothing cached.
        """
        actual = sha256_file(candidate)
        if actual != pin.sha256:
            candidate.unlink(missing_ok=True)
            raise ChecksumError(
                f"{pin.archive} from {origin} has sha256 {actual}, but the pin expects "
                f"{pin.sha256}; nothing was cached."
            )
        target = self.path(pin)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(candidate, target)
        return target


#: Runs ``apt-get source`` somewhere (the builder container): (route, archive file
#: name, download directory) -> the downloaded archive.
DebianFetcher = Callable[[Route, str, Path], Path]


@dataclass(frozen=True)
class Fetched:
    """Either a verified archive or, for the git route, a checkout of a verified commit."""

    archive: Path | None = None
    checkout: Path | None = None
    route: str = ""
    provenance: Provenance | None = None


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise InfrastructureError(f"Downloading {url} failed: {err}.") from err


#: A HEAD request answers quickly or the mirror is not there.
PROBE_TIMEOUT = 20.0


def url_exists(url: str) -> bool:
    """Whether *url* answers a HEAD request with success."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT
        ):
            return True
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def _git_checkout(route: Route, dest: Path) -> str:
    """Clone *route* at its tag (or branch) into *dest*; return the commit, checked
    against the pin.

    Raises:
        ChecksumError: the tag resolves to another commit, or the branch does not
            contain the commit; the checkout is removed.
    """
    if route.branch:
        return _branch_checkout(route, dest)
    assert route.url and route.tag and route.commit
    argv = ["git", "clone", "--quiet", "--depth", "1", "--branch", route.tag]
    if route.submodules:
        argv += ["--recurse-submodules", "--shallow-submodules"]
    run.run([*argv, route.url, str(dest)], timeout=DOWNLOAD_TIMEOUT)
    head = run.run(["git", "-C", str(dest), "rev-parse", "HEAD"]).stdout.decode().strip()
    if head != route.commit:
        shutil.rmtree(dest, ignore_errors=True)
        raise ChecksumError(
            f"{route.url} tag {route.tag} resolves to commit {head}, but the pin expects "
            f"commit {route.commit}."
        )
    return head


def _branch_checkout(route: Route, dest: Path) -> str:
    """Clone *route*'s branch (its whole history: the commit may be anywhere on it),
    check that the branch contains the commit, and check the commit out."""
    assert route.url and route.branch and route.commit
    argv = ["git", "clone", "--quiet", "--no-checkout", "--single-branch"]
    run.run([*argv, "--branch", route.branch, route.url, str(dest)], timeout=DOWNLOAD_TIMEOUT)
    on_branch = run.run(
        ["git", "-C", str(dest), "merge-base", "--is-ancestor", route.commit, "HEAD"],
        check=False,
    )
    if on_branch.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        raise ChecksumError(
            f"{route.url} branch {route.branch} does not contain commit {route.commit}, "
            "which the pin names."
        )
    run.run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", route.commit])
    if route.submodules:
        run.run(
            ["git", "-C", str(dest), "submodule", "update", "--quiet", "--init", "--recursive"],
            timeout=DOWNLOAD_TIMEOUT,
        )
    head = run.run(["git", "-C", str(dest), "rev-parse", "HEAD"]).stdout.decode().strip()
    if head != route.commit:  # cannot happen after checkout of a full id; checked anyway
        shutil.rmtree(dest, ignore_errors=True)
        raise ChecksumError(f"{dest} is at {head}, not at the pinned {route.commit}.")
    return head


def fetch(pin: Pin, cache: DownloadCache, debian_fetcher: DebianFetcher | None = None) -> Fetched:
    """Return the pinned source, from the cache or from the first route that works.

    Raises:
        ChecksumError: a route delivered bytes with the wrong hash (not retried:
            that is a supply-chain problem to look at, not a flaky mirror).
        InfrastructureError: no route worked; each one's reason is listed.
    """
    cached = cache.lookup(pin) if pin.archive else None
    if cached:
        return Fetched(
            archive=cached,
            route="download cache",
            provenance=Provenance("download cache", sha256=pin.sha256),
        )
    failures = []
    cache.root.mkdir(parents=True, exist_ok=True)
    for route in pin.routes:
        log.info("fetching %s %s from %s", pin.name, pin.version, route.describe())
        try:
            if route.kind is RouteKind.TARBALL:
                assert route.url
                with tempfile.TemporaryDirectory(dir=cache.root) as tmp:
                    part = Path(tmp) / pin.archive
                    _download(route.url, part)
                    return _archive(cache.store(pin, part, route.describe()), pin, route)
            if route.kind is RouteKind.DEBIAN:
                if debian_fetcher is None:
                    raise InfrastructureError("no builder container to run apt-get source in")
                with tempfile.TemporaryDirectory(dir=cache.root) as tmp:
                    part = debian_fetcher(route, pin.archive, Path(tmp))
                    return _archive(cache.store(pin, part, route.describe()), pin, route)
            checkout = cache.root / "git" / f"{pin.name}-{route.commit or pin.version}"
            shutil.rmtree(checkout, ignore_errors=True)
            commit = _git_checkout(route, checkout)
            return Fetched(
                checkout=checkout,
                route=route.describe(),
                provenance=Provenance(route.describe(), commit=commit),
            )
        except ChecksumError:
            raise
        except (InfrastructureError, CommandError) as err:
            log.info("  %s: %s", route.describe(), err.message)
            failures.append(f"{route.describe()}: {err.message}")
    what = pin.archive or f"{pin.name} {pin.version}"  # a branch's pin has no archive
    raise InfrastructureError(
        f"{what} could not be fetched by any route.", hint="; ".join(failures)
    )


def _archive(path: Path, pin: Pin, route: Route) -> Fetched:
    """An archive *route* delivered and :meth:`DownloadCache.store` checked."""
    return Fetched(
        archive=path,
        route=route.describe(),
        provenance=Provenance(route.describe(), sha256=pin.sha256),
    )


def unpack(fetched: Fetched, dest: Path) -> None:
    """Unpack the archive (or copy the checkout) so that *dest*, absent or empty, is the
    source root.

    The archive's single top-level directory becomes *dest*: it is unpacked beside
    *dest* and renamed, so the archive is decompressed once (listing it first to check
    its shape would decompress it twice).

    Raises:
        InputError: the archive does not have exactly one top-level directory.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if fetched.checkout is not None:
        run.run(["cp", "-a", f"{fetched.checkout}/.", str(dest)])
        shutil.rmtree(dest / ".git", ignore_errors=True)
        return
    assert fetched.archive is not None
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-unpack-", dir=dest.parent))
    try:
        # As root, tar would give the files (and the top directory that becomes *dest*)
        # the archive's owners, and git refuses a tree another user owns.
        run.run(["tar", "-xf", str(fetched.archive), "--no-same-owner", "-C", str(staging)])
        tops = list(staging.iterdir())
        if len(tops) != 1 or not tops[0].is_dir() or tops[0].is_symlink():
            raise InputError(f"{fetched.archive.name} does not unpack into one directory.")
        tops[0].chmod(dest.stat().st_mode)
        os.replace(tops[0], dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def apply_quirks(pin: Pin, tree: Path) -> list[str]:
    """Apply the pin's quirks; return a line per quirk that changed something."""
    done = []
    for q in pin.quirks:
        target, source = tree / q.path, tree / q.source
        if target.is_dir() and any(target.iterdir()):
            continue
        if not source.is_dir():
            raise ConfigError(f"Quirk for {pin.name}: {q.source} is not a directory in the source.")
        target.mkdir(parents=True, exist_ok=True)
        run.run(["cp", "-a", f"{source}/.", str(target)])
        done.append(f"filled {q.path} from {q.source}")
    return done
