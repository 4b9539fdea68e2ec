"""``./inv cache``: the machine's build cache, listed and pruned.

Every clone and workspace on a machine shares one cache (:func:`harness.config.
default_cache`). A build's entry is named by the hash of every input it was made from,
and the builds are reproducible, so an entry is the same bytes a rebuild would make:
that is why a hit may be trusted, and why pruning never loses anything but time.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.components.workspace import USED
from harness.errors import ConfigError

#: ``<component>-<key>``: the entries :class:`~harness.components.workspace.BuildCache`
#: renames into place (never its ``.partial-*`` directories).
ENTRY = re.compile(r"(?P<component>[a-z0-9_]+)-(?P<key>[0-9a-f]{16,64})")


@dataclass(frozen=True)
class Entry:
    component: str
    key: str
    path: Path
    size: int
    #: When the build finished, and when a build last used it (epoch seconds).
    built: float
    used: float


def entries(builds: Path) -> list[Entry]:
    """The finished entries under *builds*, most recently used first."""
    found = []
    for path in builds.iterdir() if builds.is_dir() else ():
        m = ENTRY.fullmatch(path.name)
        if m is None or not path.is_dir():
            continue
        built = path.stat().st_mtime
        try:
            used = (path / USED).stat().st_mtime
        except OSError:
            used = built
        found.append(Entry(m["component"], m["key"], path, _size(path), built, used))
    return sorted(found, key=lambda e: e.used, reverse=True)


def prune(builds: Path, keep: int, max_bytes: int | None = None) -> list[Entry]:
    """Remove all but the *keep* most recently used entries of each component, then the
    least recently used until the rest fit in *max_bytes*; the entries removed.

    An entry is renamed out of the way before it is deleted, so a build that looks it up
    finds it whole or not at all.

    Raises:
        ConfigError: *keep* is below one, or *max_bytes* below zero.
    """
    if keep < 1:
        raise ConfigError(f"--keep must be at least 1, not {keep}.")
    if max_bytes is not None and max_bytes < 0:
        raise ConfigError("--max-size must not be negative.")
    listed = entries(builds)
    seen: dict[str, int] = {}
    doomed: list[Entry] = []
    kept: list[Entry] = []
    for entry in listed:
        seen[entry.component] = seen.get(entry.component, 0) + 1
        (kept if seen[entry.component] <= keep else doomed).append(entry)
    if max_bytes is not None:
        total = sum(e.size for e in kept)
        while kept and total > max_bytes:
            oldest = kept.pop()
            total -= oldest.size
            doomed.append(oldest)
    for entry in doomed:
        trash = entry.path.with_name(f".trash-{os.getpid()}-{entry.path.name}")
        try:
            os.rename(entry.path, trash)
        except FileNotFoundError:  # another prune was first
            continue
        shutil.rmtree(trash, ignore_errors=True)
    return doomed


def parse_size(text: str) -> int:
    """``20G``, ``500M`` or a number of bytes -> bytes.

    Raises:
        ConfigError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"--max-size {text!r} is not a size like 20G or 500M.")
    return int(m[1]) << (10 * "KMGT".find(m[2].upper()) + 10 if m[2] else 0)


def render(cache: Path, listed: list[Entry], removed: list[Entry] | None = None) -> str:
    now = time.time()
    lines = [f"build cache: {cache / 'builds'}"]
    if removed is not None:
        freed = sum(e.size for e in removed)
        lines.append(f"pruned {len(removed)} entries ({_human(freed)})")
    if not listed:
        lines.append("no entries")
        return "\n".join(lines)
    lines.append(f"{'component':10} {'key':24} {'size':>9} {'built':>9} {'used':>9}")
    for e in listed:
        lines.append(
            f"{e.component:10} {e.key:24} {_human(e.size):>9} "
            f"{_age(now - e.built):>9} {_age(now - e.used):>9}"
        )
    lines.append(f"{len(listed)} entries, {_human(sum(e.size for e in listed))}")
    for other in ("downloads", "images"):
        if (cache / other).is_dir():
            lines.append(f"{other}: {_human(_size(cache / other))}")
    return "\n".join(lines)


def _size(root: Path) -> int:
    total = 0
    for path, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(path, name)).st_size
            except OSError:
                continue
    return total


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit} ago"
    return "just now"
