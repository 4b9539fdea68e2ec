"""Following a pin to other Debian source versions, on apt's real output for edk2."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError, InfrastructureError
from harness.upstream import sources
from tests.conftest import DATA, ROOT

INDEX = (DATA / "edk2-showsrc.txt").read_text()


def pin() -> sources.Pin:
    return sources.load_pin(ROOT / "patches" / "ovmf" / "upstream.toml", "ovmf")


def test_candidates_are_newest_first_with_debian_checksums() -> None:
    found = sources.debian_candidates(pin(), INDEX)
    assert [p.routes[0].version for p in found][:3] == [
        "2026.08+ds-2",
        "2025.02-8+deb13u1",
        "2022.11-6+deb12u2",
    ]
    newest = found[0]
    assert newest.version == "2026.08"  # Debian's +ds repack suffix is not upstream's
    assert newest.archive == "edk2_2026.08+ds.orig.tar.xz"
    assert newest.quirks == pin().quirks
    # The pinned release, reached through the index, has exactly the pinned bytes.
    pinned = next(p for p in found if p.routes[0].version == "2025.02-8+deb13u1")
    assert (pinned.archive, pinned.sha256) == (pin().archive, pin().sha256)


@pytest.mark.parametrize("asked", ["2022.11", "2022.11-6+deb12u2"])
def test_a_version_by_upstream_or_debian_name(asked: str) -> None:
    (only,) = sources.debian_candidates(pin(), INDEX, asked)
    assert only.version == "2022.11" and only.archive == "edk2_2022.11.orig.tar.xz"


def test_an_unknown_version_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"Debian has no edk2 source version 1999\.01"):
        sources.debian_candidates(pin(), INDEX, "1999.01")


def test_a_package_apt_does_not_know() -> None:
    with pytest.raises(InfrastructureError, match="apt knows no source package edk2"):
        sources.debian_candidates(pin(), "Package: other\nVersion: 1-1\n")


def test_a_pin_without_a_debian_route(tmp_path: Path) -> None:
    toml = tmp_path / "upstream.toml"
    toml.write_text(
        'name = "x"\nversion = "1"\narchive = "x.tar.xz"\n'
        f'sha256 = "{"0" * 64}"\n[[source]]\nkind = "tarball"\nurl = "http://x/x.tar.xz"\n'
    )
    with pytest.raises(ConfigError, match="no Debian source route"):
        sources.debian_candidates(sources.load_pin(toml), INDEX)


def test_head_pins_are_followed_in_one_place_for_builds_and_nights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """builds.workspace is where --upstream head replaces the pins, for build-* and
    patches.check and for the nightly's own workspace alike; pinned runs ask nothing."""
    from types import SimpleNamespace

    from harness.components.workspace import Workspace
    from harness.config import resolve
    from harness.flows import builds

    newest = sources.debian_candidates(pin(), INDEX)[0]
    asked: list[tuple[str, ...]] = []

    def follow(
        names: tuple[str, ...], tag: str, patches: Path, notes: list[str]
    ) -> tuple[sources.Pin, ...]:
        asked.append(names)
        notes.append("passed over 2026.09")
        return (newest,)

    monkeypatch.setattr(builds, "follow_upstream", follow)
    monkeypatch.setattr(builds, "builder_image", lambda *a: SimpleNamespace(tag="tools"))
    night = Workspace(tmp_path / "night")
    pinned = resolve(workspace=str(tmp_path))
    assert builds.workspace(pinned, ("ovmf",), given=night) is night and asked == []
    heard: list[str] = []
    head = resolve(workspace=str(tmp_path), upstream="head")
    ws = builds.workspace(head, ("ovmf",), heard.append, given=night)
    assert ws.root == night.root and ws.upstream == (newest,)
    assert ws.component("ovmf").pin.version == "2026.08"
    assert asked == [("ovmf",)] and heard == ["passed over 2026.09"]
