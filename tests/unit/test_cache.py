"""The machine's build cache: listing, pruning, and two builders of one key."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.components.workspace import USED, BuildCache
from harness.errors import ConfigError
from harness.flows import cache

ROOT = Path(__file__).resolve().parents[2]


def _entry(builds: Path, name: str, size: int, used: float) -> None:
    with BuildCache(builds).entry(name) as out:
        (out / "payload").write_bytes(b"x" * size)
    os.utime(builds / name / USED, (used, used))


@pytest.fixture
def builds(tmp_path: Path) -> Path:
    root = tmp_path / "builds"
    for n, (component, used) in enumerate(
        [("grub", 100), ("grub", 300), ("grub", 200), ("ovmf", 50), ("linux", 400)]
    ):
        _entry(root, f"{component}-{n:024x}", 1000 * (n + 1), used)
    (root / "grub-000000000000000000000009.partial-1").mkdir()  # someone's build
    return root


def test_entries_are_listed_most_recently_used_first(builds: Path) -> None:
    listed = cache.entries(builds)
    assert [(e.component, e.used) for e in listed] == [
        ("linux", 400), ("grub", 300), ("grub", 200), ("grub", 100), ("ovmf", 50)
    ]  # fmt: skip
    assert listed[0].size == 5000 and listed[0].key == f"{4:024x}"


def test_a_lookup_marks_the_entry_used(builds: Path) -> None:
    name = f"ovmf-{3:024x}"
    assert BuildCache(builds).lookup(name) is not None
    assert cache.entries(builds)[0].path.name == name


def test_prune_keeps_the_newest_per_component_then_fits_the_cap(builds: Path) -> None:
    removed = cache.prune(builds, keep=2)
    assert [(e.component, e.used) for e in removed] == [("grub", 100)]
    assert sorted(p.name for p in builds.iterdir() if not p.name.endswith(".partial-1")) == [
        f"grub-{1:024x}", f"grub-{2:024x}", f"linux-{4:024x}", f"ovmf-{3:024x}"
    ]  # fmt: skip
    # Left: linux 5000 (400), grub 2000 (300), grub 3000 (200), ovmf 4000 (50).
    removed = cache.prune(builds, keep=2, max_bytes=7000)
    assert [(e.component, e.used) for e in removed] == [("ovmf", 50), ("grub", 200)]
    assert sum(e.size for e in cache.entries(builds)) == 7000
    assert not any(p.name.startswith(".trash") for p in builds.iterdir())


def test_prune_refuses_nonsense(builds: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        cache.prune(builds, keep=0)
    assert len(cache.entries(builds)) == 5


@pytest.mark.parametrize(
    ("text", "size"), [("20G", 20 << 30), ("500M", 500 << 20), ("1KiB", 1024), ("7", 7)]
)
def test_sizes(text: str, size: int) -> None:
    assert cache.parse_size(text) == size


def test_a_size_that_is_none_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="not a size like 20G"):
        cache.parse_size("12Q")


def test_the_listing_names_what_it_holds(builds: Path) -> None:
    text = cache.render(builds.parent, cache.entries(builds), [])
    assert "pruned 0 entries (0 B)" in text
    assert "5 entries, 14.6 KiB" in text and f"linux      {4:024x}" in text


def test_two_builders_of_one_key_keep_the_first_entry(tmp_path: Path) -> None:
    """Two clones build the same inputs at once: the second finished build is dropped,
    and the first, which a reader may hold, is never replaced under it."""
    builds = BuildCache(tmp_path)
    with builds.entry("grub-" + "a" * 24) as first:
        (first / "file").write_text("first")
        with builds.entry("grub-" + "a" * 24) as second:  # finishes first
            (second / "file").write_text("second")
    entry = builds.lookup("grub-" + "a" * 24)
    assert entry is not None and (entry / "file").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grub-" + "a" * 24]


def test_a_key_being_built_is_waited_for_not_built_again(tmp_path: Path) -> None:
    """A second process that wants a key another is building blocks on the key's lock
    until that build is in place, then finds the entry; other keys do not wait. (Two
    threads stand for the two processes: flock locks belong to each open of the file.)"""
    builds = BuildCache(tmp_path)
    name = "grub-" + "b" * 24
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with builds.building(name):
            holding.set()
            release.wait(10)
            with builds.entry(name) as out:
                (out / "file").write_text("built once")
            order.append("built")

    def second() -> None:
        with builds.building(name):
            order.append("found" if builds.lookup(name) else "missing")

    builder = threading.Thread(target=first)
    builder.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=second)
    waiter.start()
    with builds.building("ovmf-" + "b" * 24):  # another key: no wait
        pass
    waiter.join(0.3)
    assert waiter.is_alive() and order == []
    release.set()
    builder.join(10)
    waiter.join(10)
    assert order == ["built", "found"]
    assert cache.entries(tmp_path)[0].path.name == name  # the lock files are no entry
    assert len(cache.entries(tmp_path)) == 1


def test_the_cache_task_speaks_in_one_sentence(tmp_path: Path) -> None:
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "c")}
    ran = subprocess.run(
        [sys.executable, "-m", "harness", "--search-root", str(ROOT), "cache", "--prune",
         "--keep", "x"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (ran.returncode, ran.stderr.strip()) == (
        2,
        "error: --keep of cache takes a whole number, not 'x'; see ./inv --help cache.",
    )
    ran = subprocess.run(
        [sys.executable, "-m", "harness", "--search-root", str(ROOT), "cache"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0 and f"build cache: {tmp_path / 'c' / 'builds'}" in ran.stdout
