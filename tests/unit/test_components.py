"""The component registry, the build plan's cache keys, the typed manifests and their
schemas, and the configuration. No Docker here: builder images are stand-ins."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness import records
from harness.components import grub, linux, ovmf, qemu, registry
from harness.components.pipeline import (
    BUILDERS,
    BuilderRecord,
    BuildInputs,
    PatchRecord,
    Request,
    Role,
    SourceRecord,
    plan,
)
from harness.components.workspace import Workspace
from harness.config import Layout, QemuChoice, Upstream, default_cache, resolve
from harness.errors import ConfigError, InputError
from harness.host.containers import BuilderImage
from harness.upstream.sources import Provenance
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

SCHEMAS = registry.SCHEMAS


def test_every_component_has_its_data_and_comes_after_what_it_is_built_with() -> None:
    seen: list[str] = []
    for spec in registry.COMPONENTS:
        assert (ROOT / "patches" / spec.source_name / "upstream.toml").is_file(), spec.name
        assert (BUILDERS / f"Dockerfile.{spec.builder}").is_file(), spec.builder
        assert all(d.name in seen for d in spec.depends), f"{spec.name} before its deps"
        # A build of another's source comes after it (the nightly's "series applies").
        assert not spec.source or spec.source in seen, f"{spec.name} before {spec.source}"
        assert dataclasses.is_dataclass(spec.manifest_type)
        seen.append(spec.name)
    assert len(set(seen)) == len(seen)
    # ... and every pin under patches/ is a component (./inv build takes its names there).
    pinned = {p.parent.name for p in (ROOT / "patches").glob("*/upstream.toml")}
    assert pinned == {s.name for s in registry.COMPONENTS if not s.source}
    assert grub.ARM64.source == "grub" and grub.ARM64 in registry.for_boots(QemuChoice.SYSTEM)
    assert (BUILDERS / f"Dockerfile.{registry.TOOLS_BUILDER}").is_file()
    assert registry.with_role(Role.FIRMWARE) is ovmf.SPEC
    assert registry.with_role(Role.EMULATOR) is qemu.SPEC
    assert qemu.SPEC not in registry.for_boots(QemuChoice.SYSTEM)
    assert qemu.SPEC in registry.for_boots(QemuChoice.BUILT)
    assert registry.with_role(Role.GUEST_KERNEL) is linux.SPEC
    assert linux.SPEC in registry.for_boots(QemuChoice.SYSTEM)
    with pytest.raises(ConfigError, match="'kernel'; known: grub, grub-arm64, ovmf, qemu"):
        registry.get("kernel")


def fake_builder(name: str) -> BuilderImage:
    return BuilderImage(f"harness-{name}:x", f"sha256:{name}", BUILDERS / f"Dockerfile.{name}")


def keys(ws: Workspace, request: Request, builder: BuilderImage | None = None) -> dict[str, str]:
    return {
        spec.name: plan(spec, ws, builder or fake_builder(spec.builder), request, fake_builder).key
        for spec in registry.COMPONENTS
    }


def test_the_cache_key_covers_every_input(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, ROOT / "patches", cache_root=tmp_path / "cache")
    base = keys(ws, Request())
    assert keys(ws, Request()) == base  # the same inputs, the same keys
    assert keys(ws, Request(apply=False)) != base
    debug = keys(ws, Request(debug=True))
    assert debug["ovmf"] != base["ovmf"] and debug["grub"] == base["grub"]
    # OVMF is built with GRUB: a GRUB tree changes OVMF's key too, and makes both local.
    tree = Request({"grub": tmp_path / "grub-tree"})
    local = keys(ws, tree)
    assert local["grub"] != base["grub"] and local["ovmf"] != base["ovmf"]
    assert local["qemu"] == base["qemu"]
    assert plan(ovmf.SPEC, ws, fake_builder("bookworm"), tree, fake_builder).local
    assert not plan(ovmf.SPEC, ws, fake_builder("bookworm"), Request(), fake_builder).local
    other = keys(ws, Request(), BuilderImage("harness-bookworm:y", "sha256:other", BUILDERS))
    assert other["grub"] != base["grub"]


def test_the_cache_key_of_a_pin_is_what_it_was(tmp_path: Path) -> None:
    """The pipeline's inputs are the ones the three copied build functions had, so a
    build cached before the registry is found again (its manifest is then renewed)."""
    ws = Workspace(tmp_path, ROOT / "patches", cache_root=tmp_path / "cache")
    builder = fake_builder("bookworm")
    got = plan(ovmf.SPEC, ws, builder, Request(), fake_builder).inputs
    assert set(got) == {
        "component", "builder", "script", "target", "extra", "grub", "local_tree",
        "series_applied",
    }  # fmt: skip
    assert got["component"] == ws.component("ovmf").inputs()
    assert got["grub"] == plan(grub.SPEC, ws, builder, Request(), fake_builder).key
    assert (got["target"], got["extra"]) == ("RELEASE", "")


def sample_inputs() -> BuildInputs:
    return BuildInputs(
        sources={
            "ovmf": SourceRecord(
                "edk2",
                "2025.02",
                "edk2.tar.xz",
                "ab" * 32,
                "c" * 40,
                (),
                (PatchRecord("0001-x.patch", "cd" * 32),),
            ),
            "grub": SourceRecord("grub", "2.14", "grub.tar.xz", "ef" * 32),
        },
        provenance={"ovmf": Provenance("download cache", "ab" * 32), "grub": None},
        local_trees={"ovmf": None, "grub": "/src/grub"},
        series_applied=True,
        builder_image=BuilderRecord("harness-bookworm:1", "sha256:1"),
        toolchain=("gcc (Debian 12.2.0-14) 12.2.0",),
        options={"target": "RELEASE", "extra": ""},
    )


def sample_ovmf() -> ovmf.OvmfManifest:
    return ovmf.OvmfManifest(
        schema=ovmf.SCHEMA,
        output=ovmf.OvmfOutput("OVMF.fd", "00" * 32, 4 << 20, "11" * 48,
                               ovmf.Area(0x80B000, 0x1000), None, "22" * 32, ("efisecret",)),
        inputs=sample_inputs(),
        cache_key="33" * 32,
        build_seconds=251.5,
    )  # fmt: skip


def test_a_manifest_round_trips_and_fits_its_schema() -> None:
    manifest = sample_ovmf()
    data = json.loads(json.dumps(records.dump(manifest)))
    assert records.load(ovmf.OvmfManifest, data, "manifest.json") == manifest
    schema = json.loads((SCHEMAS / "ovmf-manifest.schema.json").read_text())
    jsonschema.validate(data, schema)
    broken = {**data, "output": {**data["output"], "size": "4 MiB"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["output"].update(size="4 MiB"), "manifest.json.output.size must be an"),
        (lambda d: d.update(schema="harness-ovmf-manifest/1"), "manifest.json.schema is 'harness"),
        (lambda d: d["output"].pop("sha256"), "manifest.json.output lacks the field 'sha256'"),
        (lambda d: d.update(extra=1), "manifest.json has unknown fields: extra"),
        (lambda d: d["inputs"]["sources"]["grub"].update(patches={}), "patches must be a list"),
        (lambda d: d["output"].update(secret_area=[1, 2]), "fits no type|must be an object"),
    ],
)
def test_a_broken_manifest_is_one_sentence(change: Any, message: str) -> None:
    data = json.loads(json.dumps(records.dump(sample_ovmf())))
    change(data)
    with pytest.raises(InputError, match=message):
        records.load(ovmf.OvmfManifest, data, "manifest.json")


@pytest.mark.parametrize("name", registry.names())
def test_the_published_schemas_are_the_manifests(name: str) -> None:
    """harness/components/schemas/ is derived from the dataclasses; a changed manifest
    must change its schema file (and its schema name) in the same commit."""
    spec = registry.get(name)
    path = registry.SCHEMAS / f"{name}-manifest.schema.json"
    want = registry.manifest_schema(spec)
    assert json.loads(path.read_text()) == want, f"regenerate {path} (see docs/manifests.md)"


def test_config_resolves_once_with_one_meaning_per_option(tmp_path: Path) -> None:
    cfg = resolve(env={})
    assert cfg.workspace == Path("out").resolve()
    assert (cfg.upstream, cfg.qemu, cfg.base) == (Upstream.PINNED, QemuChoice.SYSTEM,
                                                  "debian:bookworm")  # fmt: skip
    assert cfg.builds == cfg.layout
    env = {"HARNESS_WORKSPACE": str(tmp_path / "ws"), "HARNESS_ACCEL": "tcg"}
    cfg = resolve(upstream="head", qemu="built", env=env)
    assert cfg.workspace == tmp_path / "ws" and str(cfg.accel) == "tcg"
    assert cfg.builds.root == tmp_path / "ws" / "upstream-head"
    assert resolve(workspace=str(tmp_path / "opt"), env=env).workspace == tmp_path / "opt"
    layout = Layout(tmp_path, tmp_path / "cache")
    assert layout.firmware == tmp_path / "ovmf" / "OVMF.fd"
    assert layout.image("minimal", "luks1") == tmp_path / "images" / "minimal-luks1"
    assert Workspace.of(cfg).root == cfg.builds.root
    # One cache per machine, whatever the workspace; the head twin shares it.
    assert Workspace.of(cfg).layout.cache == cfg.layout.cache == cfg.builds.cache
    with pytest.raises(
        ConfigError, match="--upstream must be pinned, head or master, not 'sideways'"
    ):
        resolve(upstream="sideways", env={})
    with pytest.raises(ConfigError, match="--qemu must be system or built, not 'host'"):
        resolve(qemu="host", env={})
    with pytest.raises(ConfigError, match="--base 'bookworm' is not a Docker image name"):
        resolve(base="bookworm", env={})
    with pytest.raises(ConfigError, match="--accel must be auto, kvm or tcg"):
        resolve(env={"HARNESS_ACCEL": "hvf"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.base = "x"  # type: ignore[misc]


def test_the_cache_is_the_machines_and_may_be_moved(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path / "home")}
    assert default_cache(home) == tmp_path / "home" / ".cache" / "harness"
    xdg = home | {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert default_cache(xdg) == tmp_path / "xdg" / "harness"
    # The XDG spec ignores a relative XDG_CACHE_HOME.
    assert default_cache(home | {"XDG_CACHE_HOME": "rel"}) == default_cache(home)
    moved = xdg | {"HARNESS_CACHE": str(tmp_path / "moved")}
    assert default_cache(moved) == tmp_path / "moved"
    assert resolve(workspace=str(tmp_path / "a"), env=moved).layout.cache == tmp_path / "moved"
    assert resolve(workspace=str(tmp_path / "b"), env=moved).layout.builds == (
        tmp_path / "moved" / "builds"
    )


def test_a_cached_build_with_an_older_manifest_is_built_again(tmp_path: Path) -> None:
    from harness.components.pipeline import _cached_manifest

    entry = tmp_path / "ovmf-0123"
    entry.mkdir()
    assert _cached_manifest(ovmf.SPEC, entry) is None  # no manifest at all (GRUB before)
    old = {"schema": "harness-ovmf-manifest/1", "output": {}, "inputs": {}}
    (entry / "manifest.json").write_text(json.dumps(old))
    assert _cached_manifest(ovmf.SPEC, entry) is None
    (entry / "manifest.json").write_text(json.dumps(records.dump(sample_ovmf())))
    assert _cached_manifest(ovmf.SPEC, entry) == sample_ovmf()


def test_publishing_replaces_the_directory_with_what_the_component_shows(tmp_path: Path) -> None:
    from harness.components.pipeline import _publish

    entry = tmp_path / "entry"
    (entry / "opt" / "qemu" / "bin").mkdir(parents=True)
    (entry / "opt" / "qemu" / "bin" / "qemu-system-x86_64").write_text("binary")
    (entry / "manifest.json").write_text("{}")
    (entry / "toolchain.txt").write_text("gcc")  # not published
    dest = tmp_path / "ws" / "qemu"
    dest.mkdir(parents=True)
    (dest / "stale").write_text("from the last build")
    assert _publish(qemu.SPEC, entry, dest) == dest
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "bin", "bin/qemu-system-x86_64", "manifest.json",
    ]  # fmt: skip
    assert not (tmp_path / "ws" / "qemu.new").exists()
