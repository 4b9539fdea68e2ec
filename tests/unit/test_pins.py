"""Pins, series files, cache keys and quirks: pure parsing, no network or Docker."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.components.workspace import BuildCache, Component, digest
from harness.errors import ConfigError
from harness.upstream.patchset import Patch, read_series
from harness.upstream.sources import Provenance, RouteKind, load_pin
from tests.conftest import ROOT

GOOD_PIN = """
name = "demo"
version = "1.0"
archive = "demo-1.0.tar.xz"
sha256 = "{}"

[[source]]
kind = "debian"
package = "demo"
version = "1.0-1"

[[source]]
kind = "git"
url = "file:///nowhere"
tag = "v1.0"
commit = "{}"
submodules = true

[[quirk]]
kind = "fill-empty-dir"
path = "a/b"
from = "c/d"
""".format("ab" * 32, "c0" * 20)


def test_real_pins_load() -> None:
    for name in ("grub", "ovmf", "qemu"):
        comp = Component.load(name)
        assert comp.pin.routes and len(comp.pin.sha256) == 64
    assert Component.load("ovmf").pin.quirks[0].path == "BaseTools/Source/C/BrotliCompress/brotli"
    assert Component.load("grub").patches[0].path.name.startswith("0001-")
    assert Component.load("qemu").patches == ()


def test_real_git_routes_pin_the_commit_and_builds_record_it() -> None:
    for name in ("grub", "ovmf"):
        comp = Component.load(name)
        (git,) = [r for r in comp.pin.routes if r.kind is RouteKind.GIT]
        assert git.commit is not None and comp.pin.commit == git.commit
        assert comp.inputs()["commit"] == git.commit
    # No git route, no commit, and the cache key of QEMU's builds is what it was.
    assert Component.load("qemu").pin.commit is None
    assert "commit" not in Component.load("qemu").inputs()


def test_pin_fields(tmp_path: Path) -> None:
    path = tmp_path / "upstream.toml"
    path.write_text(GOOD_PIN)
    pin = load_pin(path, "demo")
    assert [r.kind for r in pin.routes] == [RouteKind.DEBIAN, RouteKind.GIT]
    assert pin.routes[1].submodules and pin.quirks[0].source == "c/d"
    assert pin.routes[1].commit == pin.commit == "c0" * 20


@pytest.mark.parametrize(
    "change, message",
    [
        (('sha256 = "' + "ab" * 32, 'sha256 = "xyz'), "64 hex digits"),
        (('kind = "debian"', 'kind = "ftp"'), "kind must be one of"),
        (('package = "demo"\n', ""), "'package' must be"),
        (('kind = "fill-empty-dir"', 'kind = "rm-rf"'), "unknown kind"),
        (('name = "demo"', "name = "), "not valid TOML"),
        (('commit = "' + "c0" * 20 + '"\n', ""), "git route needs the 'commit'"),
        (('commit = "' + "c0" * 20, 'commit = "c0c0c0c'), "40 lowercase hex digits"),
        (('commit = "' + "c0" * 20, 'commit = "' + "C0" * 20), "40 lowercase hex digits"),
        (('commit = "' + "c0" * 20 + '"', "commit = 7"), "40 lowercase hex digits"),
    ],
)
def test_bad_pins(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = tmp_path / "upstream.toml"
    path.write_text(GOOD_PIN.replace(*change))
    with pytest.raises(ConfigError, match=message):
        load_pin(path)


def test_provenance_round_trip() -> None:
    record = Provenance("git file:///x at v1", commit="c0" * 20)
    assert Provenance.from_json(record.to_json()) == record
    assert Provenance.from_json(None) is None and Provenance.from_json({"sha256": "x"}) is None


def test_pin_without_routes(tmp_path: Path) -> None:
    path = tmp_path / "upstream.toml"
    path.write_text(GOOD_PIN.split("[[source]]")[0])
    with pytest.raises(ConfigError, match="no \\[\\[source\\]\\]"):
        load_pin(path)


def _patch(directory: Path, name: str, signed: bool = True) -> None:
    body = (
        "From 1 Mon Sep 17 00:00:00 2001\nFrom: A Dev <a@example.org>\n"
        f"Subject: [PATCH] {name}: do a thing\n\nBody.\n\n"
        + ("Signed-off-by: A Dev <a@example.org>\n" if signed else "")
        + "---\n"
    )
    (directory / name).write_text(body)


def test_series_parsing(tmp_path: Path) -> None:
    _patch(tmp_path, "0001-a.patch")
    _patch(tmp_path, "0002-b.patch", signed=False)
    (tmp_path / "series").write_text("# comment\n\n0001-a.patch\n0002-b.patch  # trailing\n")
    patches = read_series(tmp_path)
    assert [p.path.name for p in patches] == ["0001-a.patch", "0002-b.patch"]
    assert patches[0].signed_off and not patches[1].signed_off
    assert patches[0].subject == "0001-a.patch: do a thing"
    assert patches[0].sha256 == hashlib.sha256((tmp_path / "0001-a.patch").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "series, message",
    [("0009-missing.patch\n", "does not exist"), ("0001-a.patch\n0001-a.patch\n", "twice")],
)
def test_bad_series(tmp_path: Path, series: str, message: str) -> None:
    _patch(tmp_path, "0001-a.patch")
    (tmp_path / "series").write_text(series)
    with pytest.raises(ConfigError, match=message):
        read_series(tmp_path)


def test_our_patches_are_signed_off() -> None:
    for name in ("grub", "ovmf"):
        for patch in read_series(ROOT / "patches" / name):
            assert patch.signed_off, patch.path
            assert Patch.read(patch.path).author


def test_cache_key_changes_with_every_input() -> None:
    base = Component.load("grub").inputs()
    key = digest({"component": base, "builder": "sha256:1"})
    assert key == digest({"builder": "sha256:1", "component": base})  # order does not matter
    assert key != digest({"component": base, "builder": "sha256:2"})
    changed = {**base, "patches": [*base["patches"], {"file": "x", "sha256": "0"}]}
    assert key != digest({"component": changed, "builder": "sha256:1"})


def test_cache_entries_are_all_or_nothing(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    with pytest.raises(RuntimeError), cache.entry("grub-abc") as out:
        (out / "file").write_text("half")
        raise RuntimeError("interrupted")
    assert cache.lookup("grub-abc") is None and list(tmp_path.iterdir()) == []
    with cache.entry("grub-abc") as out:
        (out / "file").write_text("whole")
    found = cache.lookup("grub-abc")
    assert found is not None and (found / "file").read_text() == "whole"


def test_stale_partial_entries_are_swept(tmp_path: Path) -> None:
    (tmp_path / "ovmf-1.partial-999999999").mkdir()
    BuildCache(tmp_path)
    assert list(tmp_path.iterdir()) == []
