"""The build workspace: its lock, its paths, and the cache of finished builds."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import DEFAULT_BASE, PATCHES, Config, Layout, default_cache
from harness.errors import ConfigError
from harness.upstream import patchset, sources

log = logging.getLogger(__name__)


#: Workspaces this process holds the lock of.
_HELD: set[Path] = set()


@dataclass(frozen=True)
class Component:
    """A component's pin and series as found under ``patches/<name>``."""

    name: str
    pin: sources.Pin
    patches: tuple[patchset.Patch, ...]
    directory: Path | None = None  # patches/<name>, for the component's own data files

    @classmethod
    def load(cls, name: str, patches_root: Path = PATCHES, base: str = "") -> Component:
        """The pin and the series of ``patches/<name>``; for *base* ``master``, the series
        of ``patches/<name>/master`` when the component carries one for upstream's
        development branch (else its release series, which then must apply there too)."""
        directory = patches_root / name
        if not directory.is_dir():
            raise ConfigError(f"There is no patches/{name} directory.")
        series = directory / base if base and (directory / base / "series").is_file() else directory
        return cls(
            name,
            sources.load_pin(directory / "upstream.toml", name),
            tuple(patchset.read_series(series)),
            directory,
        )

    def inputs(self) -> dict[str, Any]:
        # The upstream commit only where the pin has one, so the cache keys of pins
        # without a git route (QEMU's) stay what they were.
        commit = {"commit": self.pin.commit} if self.pin.commit else {}
        return {
            "name": self.pin.name,
            "version": self.pin.version,
            **commit,
            "archive": self.pin.archive,
            "sha256": self.pin.sha256,
            "quirks": [q.__dict__ for q in self.pin.quirks],
            "patches": [{"file": p.path.name, "sha256": p.sha256} for p in self.patches],
        }


@dataclass(frozen=True)
class Workspace:
    """Where builds happen (``out/``, see :mod:`harness.config`): downloads, build cache,
    work trees, logs and the published artifacts, built from the pins and series under
    ``patches`` in builder images made FROM *base*."""

    root: Path
    patches: Path = PATCHES
    #: Pins that replace those under ``patches`` (``--upstream head``, a rebase).
    upstream: tuple[sources.Pin, ...] = ()
    base: str = DEFAULT_BASE
    #: The machine's cache (downloads, builds by key): shared by every workspace.
    cache_root: Path = field(default_factory=default_cache)
    #: The series of the components whose pin ``upstream`` replaces, where they carry
    #: one per base ("master"); "" for the release series.
    series: str = ""

    @classmethod
    def of(cls, cfg: Config, upstream: tuple[sources.Pin, ...] = ()) -> Workspace:
        """The workspace a configuration builds in (its head twin for ``--upstream
        head``, whose moved pins the caller looked up)."""
        return cls(cfg.builds.root, cfg.patches, upstream, cfg.base, cfg.layout.cache)

    @property
    def layout(self) -> Layout:
        return Layout(self.root, self.cache_root)

    def component(self, name: str) -> Component:
        pin = next((p for p in self.upstream if p.component == name), None)
        # A component left on its release pin keeps its release series.
        comp = Component.load(name, self.patches, self.series if pin else "")
        return dataclasses.replace(comp, pin=pin) if pin else comp

    @property
    def downloads(self) -> sources.DownloadCache:
        return sources.DownloadCache(self.layout.downloads)

    @property
    def labels(self) -> dict[str, str]:
        """Docker labels that tie a build container to this workspace."""
        return {"harness.workspace": str(self.root)}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the workspace: two builds in one ``out/`` wait for each other instead of
        unpacking into the same trees."""
        if self.root in _HELD:  # re-entered (build_ovmf builds GRUB): already ours
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another build in %s", self.root)
                fcntl.flock(lock, fcntl.LOCK_EX)
            _HELD.add(self.root)
            try:
                yield
            finally:
                _HELD.discard(self.root)
                fcntl.flock(lock, fcntl.LOCK_UN)


def digest(inputs: dict[str, Any]) -> str:
    """Cache key: SHA-256 of the canonical JSON of every input."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


class BuildCache:
    """``builds/<component>-<key>/``: an entry appears only when its build completed.

    Builds write into a ``.partial-<random>-<pid>`` directory renamed into place at the end; an
    interrupted build leaves only a partial directory, which the next run removes. Every
    clone on the machine shares the cache. A build holds its key's lock
    (:meth:`building`), so a second process that wants the same key waits and then finds
    the entry instead of compiling it again; should two builds of a key still finish
    (a file system whose flock does not reach the other process), the first rename wins
    and the second is dropped (the builds are reproducible, so both are the same bytes).
    An entry in use is never replaced under its reader.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.partial-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    def lookup(self, name: str) -> Path | None:
        entry = self.root / name
        if not entry.is_dir():
            return None
        touch_used(entry)
        return entry

    @contextlib.contextmanager
    def building(self, name: str) -> Iterator[None]:
        """Hold *name*'s build lock (``.locks/<name>``, an flock the kernel drops when the
        process dies): look the entry up again once it is held."""
        locks = self.root / LOCKS
        locks.mkdir(exist_ok=True)
        with open(locks / name, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: another process is building it; waiting for that build", name)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def entry(self, name: str) -> Iterator[Path]:
        # One process may build a key twice at once (two threads): the pid comes last.
        partial = self.root / f"{name}.partial-{secrets.token_hex(4)}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            yield partial
            touch_used(partial)
            try:
                os.rename(partial, self.root / name)
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                log.info("%s: built by another process meanwhile; keeping that entry", name)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


#: The directory of the build locks, one empty file per key ever built.
LOCKS = ".locks"

#: The file whose mtime is an entry's last use (``./inv cache`` shows it; prune keeps
#: the newest).
USED = ".used"


def touch_used(entry: Path) -> None:
    """Record that *entry* was used now (a read-only cache just does not record it)."""
    with contextlib.suppress(OSError):
        (entry / USED).touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()
