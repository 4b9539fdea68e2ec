"""One build pipeline for every component.

A component is a :class:`Spec` (its module declares one, the registry lists them):
its builder image, build script, what it is built with, its outputs and its manifest.
:func:`build` runs any of them the same way::

    inputs -> cache key -> cached entry, or: prepared tree -> container -> manifest
           -> publish

The cache key is the digest of every input (the pin and series, the builder image, the
script, the component's options, and the keys of what it is built with), so an entry
is reused only for exactly the same inputs; a local tree is never cached.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from harness import records
from harness.components.trees import SourceTree, prepare_tree, work_tree_provenance
from harness.components.workspace import BuildCache, Component, Workspace, digest
from harness.errors import InputError
from harness.host import containers
from harness.timing import stage
from harness.upstream.sources import Provenance, Quirk
from harness.upstream.style import StyleChecker

log = logging.getLogger(__name__)

#: The Dockerfiles of the builder images (``Dockerfile.<name>``), and their context.
BUILDERS = Path(__file__).resolve().parent / "builders"
MANIFEST = "manifest.json"
BUILD_LOG = "build.log"
TOOLCHAIN = "toolchain.txt"


class Role(enum.StrEnum):
    """How the boots use a component."""

    FIRMWARE_PART = "firmware-part"  # built into the firmware (GRUB)
    #: built and unit-tested for another architecture, booted by nothing (GRUB arm64)
    OTHER_ARCH = "other-arch"
    FIRMWARE = "firmware"  # the image QEMU boots (OVMF)
    EMULATOR = "emulator"  # the program that runs the boots (QEMU, --qemu built)
    GUEST_KERNEL = "guest-kernel"  # the kernel inside the guest images (Linux)


@dataclass(frozen=True)
class Style:
    """Upstream's style checker for a component's patches."""

    name: str
    check: StyleChecker


# -- what a manifest records of every build ------------------------------------------


@dataclass(frozen=True)
class PatchRecord:
    file: str
    sha256: str


@dataclass(frozen=True)
class SourceRecord:
    """A component's pinned source and series, as built."""

    name: str
    version: str
    archive: str
    sha256: str
    commit: str | None = None
    quirks: tuple[Quirk, ...] = ()
    patches: tuple[PatchRecord, ...] = ()

    @classmethod
    def of(cls, comp: Component) -> SourceRecord:
        pin = comp.pin
        return cls(
            pin.name,
            pin.version,
            pin.archive,
            pin.sha256,
            pin.commit,
            pin.quirks,
            tuple(PatchRecord(p.path.name, p.sha256) for p in comp.patches),
        )


@dataclass(frozen=True)
class BuilderRecord:
    tag: str
    id: str


@dataclass(frozen=True)
class BuildInputs:
    """What went into a build: the sources (this component's and those it is built
    with), how their bytes were obtained, local trees used instead of pins, whether the
    series was applied, the builder image and its toolchain, the component's options."""

    sources: dict[str, SourceRecord]
    provenance: dict[str, Provenance | None]
    local_trees: dict[str, str | None]
    series_applied: bool
    builder_image: BuilderRecord
    toolchain: tuple[str, ...]
    options: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """What every component's ``manifest.json`` records of its build; each component's
    manifest adds its ``output`` and narrows ``schema`` to its own name."""

    schema: str
    inputs: BuildInputs
    cache_key: str
    build_seconds: float


M = TypeVar("M", bound=Manifest)


# -- a component and a build -----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What to build: local trees instead of pins (by component), with the series or
    without, and in debug form where the component has one."""

    trees: Mapping[str, Path] = field(default_factory=dict)
    apply: bool = True
    debug: bool = False


@dataclass(frozen=True)
class Finished:
    """A build that just ran, handed to its component's manifest maker."""

    entry: Path
    inputs: BuildInputs
    cache_key: str
    seconds: float
    deps: Mapping[str, Built[Any]]
    request: Request

    def record(self) -> dict[str, Any]:
        """The fields every manifest takes from its build (see :class:`Manifest`)."""
        return {
            "inputs": self.inputs,
            "cache_key": self.cache_key,
            "build_seconds": round(self.seconds, 1),
        }


def _no_options(request: Request, comp: Component) -> dict[str, Any]:
    return {}


def _no_env(request: Request, builder: containers.BuilderImage, comp: Component) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Spec(Generic[M]):
    """A component: everything the pipeline needs to build it.

    Attributes:
        name: as in ``patches/<name>`` and ``./inv build-<name>``.
        builder: the builder image, ``builders/Dockerfile.<builder>``.
        script: the build script (bash) run in the builder: the source at ``/src``, a
            kept build tree at ``/build`` (with *build_dir*), outputs to ``/out``, which
            gets ``toolchain.txt`` too.
        progress: the build log lines worth a progress line.
        role: how the boots use it.
        style: upstream's style checker for its patches.
        manifest: makes the typed manifest of a finished build (checking the output).
        manifest_type: that manifest's class (for loading a cached build's).
        publish: what of the cache entry the workspace shows (``<name>/``); a path ending
            in ``/`` publishes that directory's contents.
        depends: components built first and handed in.
        dep_mounts: (component, path in its cache entry, path in the container).
        build_dir: keep a build tree between builds (incremental rebuilds).
        unit_tests: tests the build runs itself (``patches.check`` lists each).
        options: the component's own cache-key inputs for a request (e.g. debug) and
            its ``patches/<name>`` (e.g. a configuration kept there as data).
        env: environment of the build script.
        source: the component whose pin, series and source tree this one builds
            (another build of it, e.g. for another architecture); "" for its own.
    """

    name: str
    builder: str
    script: str
    progress: re.Pattern[str]
    role: Role
    style: Style
    manifest: Callable[[Finished], M]
    manifest_type: type[M]
    publish: tuple[str, ...]
    depends: tuple[Spec[Any], ...] = ()
    dep_mounts: tuple[tuple[str, str, str], ...] = ()
    build_dir: bool = False
    unit_tests: tuple[str, ...] = ()
    options: Callable[[Request, Component], dict[str, Any]] = _no_options
    env: Callable[[Request, containers.BuilderImage, Component], dict[str, str]] = _no_env
    source: str = ""

    @property
    def source_name(self) -> str:
        """The ``patches/<name>`` (and ``--tree``) this component builds."""
        return self.source or self.name


@dataclass(frozen=True)
class Built(Generic[M]):
    """A finished build: its cache entry, where it was published, its manifest."""

    component: str
    entry: Path
    published: Path
    manifest: M
    cached: bool

    @property
    def key(self) -> str:
        return self.manifest.cache_key

    @property
    def log(self) -> Path:
        return self.entry / BUILD_LOG


def builder_image(name: str, ws: Workspace) -> containers.BuilderImage:
    """The builder image ``builders/Dockerfile.<name>`` FROM the workspace's base."""
    return containers.ensure_builder(BUILDERS / f"Dockerfile.{name}", ws.base, ws.layout.cache)


@dataclass(frozen=True)
class Plan:
    """Every input of one build (its dependencies' keys included) and its key."""

    spec: Spec[Any]
    inputs: dict[str, Any]
    key: str
    local: bool  # a local tree, here or in a dependency: never from the cache

    @property
    def entry_name(self) -> str:
        return f"{self.spec.name}-{self.key[:24]}"


def plan(
    spec: Spec[Any],
    ws: Workspace,
    builder: containers.BuilderImage,
    request: Request,
    builders: Callable[[str], containers.BuilderImage] | None = None,
) -> Plan:
    """The inputs and cache key of building *spec* for *request* in *builder*; the
    builder images of what it is built with come from *builders* (default: made or
    found in Docker)."""
    builders = builders or (lambda name: builder_image(name, ws))
    deps = [plan(d, ws, builders(d.builder), request, builders) for d in spec.depends]
    tree = request.trees.get(spec.source_name)
    comp = ws.component(spec.source_name)
    inputs = {
        "component": comp.inputs(),
        "builder": builder.id,
        "script": spec.script,
        **spec.options(request, comp),
        **{d.spec.name: d.key for d in deps},
        "local_tree": str(tree) if tree else None,
        "series_applied": request.apply,
    }
    local = tree is not None or any(d.local for d in deps)
    return Plan(spec, inputs, digest(inputs), local)


def build(spec: Spec[M], ws: Workspace, request: Request | None = None) -> Built[M]:
    """Build *spec* (and first what it is built with), or take exactly these inputs'
    cached build; publish it in the workspace either way.

    Raises:
        PatchError, ChecksumError: bad series or source (nothing is built).
        CommandError: the build failed (last lines and the log path in the message).
        InfrastructureError: the output is not what the component must produce.
    """
    request = request or Request()
    with ws.locked():
        return _build(spec, ws, request)


def _build(spec: Spec[M], ws: Workspace, request: Request) -> Built[M]:
    started = time.monotonic()
    with stage("builder image"):
        builder = builder_image(spec.builder, ws)
    the_plan = plan(spec, ws, builder, request)
    cache = BuildCache(ws.layout.builds)
    # A key another process is building (a second clone, another worker) is waited for,
    # then taken from the cache, not compiled twice.
    held = contextlib.nullcontext() if the_plan.local else cache.building(the_plan.entry_name)
    with held:
        tree, hit, manifest = _build_or_hit(spec, ws, request, builder, the_plan, cache, started)
    with stage("publish"):
        published = _publish(spec, hit, ws.layout.published(spec.name))
    return Built(spec.name, hit, published, manifest, cached=tree is None)


def _build_or_hit(
    spec: Spec[M],
    ws: Workspace,
    request: Request,
    builder: containers.BuilderImage,
    the_plan: Plan,
    cache: BuildCache,
    started: float,
) -> tuple[SourceTree | None, Path, M]:
    """The cached entry of *the_plan* (no tree), or a build of it (its tree)."""
    hit = None if the_plan.local else cache.lookup(the_plan.entry_name)
    manifest = _cached_manifest(spec, hit) if hit else None
    comp = ws.component(spec.source_name)
    # The tree before the dependencies: a series that does not apply fails in seconds,
    # with nothing built.
    tree = None
    if manifest is None:
        tree = prepare_tree(
            comp,
            ws,
            builder.tag,
            local_tree=request.trees.get(spec.source_name),
            apply=request.apply,
        )
    deps = {d.name: _build(d, ws, request) for d in spec.depends}
    if tree is not None:
        with cache.entry(the_plan.entry_name) as out:
            _run(spec, comp, ws, builder, request, tree, deps, out)
            inputs = _inputs(spec, comp, ws, builder, request, tree, deps, out)
            finished = Finished(
                out, inputs, the_plan.key, time.monotonic() - started, deps, request
            )
            with stage(f"{spec.name} manifest"):
                manifest = spec.manifest(finished)
                (out / MANIFEST).write_text(json.dumps(records.dump(manifest), indent=2) + "\n")
        hit = ws.layout.builds / the_plan.entry_name
    else:
        log.info("%s: cached build %s", spec.name, the_plan.entry_name)
    assert hit is not None and manifest is not None
    return tree, hit, manifest


def _cached_manifest(spec: Spec[M], entry: Path) -> M | None:
    """The manifest of a cached build; None (build again) when it has none, or one
    written in an older layout."""
    try:
        data = json.loads((entry / MANIFEST).read_text())
        return records.load(spec.manifest_type, data, f"{entry / MANIFEST}")
    except (OSError, ValueError, InputError) as err:
        log.info("%s: cached build %s has no usable manifest (%s); building again",
                 spec.name, entry.name, err)  # fmt: skip
        return None


def _run(
    spec: Spec[Any],
    comp: Component,
    ws: Workspace,
    builder: containers.BuilderImage,
    request: Request,
    tree: SourceTree,
    deps: Mapping[str, Built[Any]],
    out: Path,
) -> None:
    mounts = [containers.Mount(tree.path, "/src"), containers.Mount(out, "/out")]
    if spec.build_dir:
        # Beside the source tree it was configured from, and gone with it: a build of
        # another's source (grub-arm64) in the source's work directory, so that a tree
        # unpacked afresh (a local tree, every time) is configured afresh.
        name = "build" if not spec.source else f"build-{spec.name}"
        build_dir = ws.layout.work(spec.source_name) / name
        build_dir.mkdir(parents=True, exist_ok=True)
        mounts.append(containers.Mount(build_dir, "/build"))
    for dep, inside, target in spec.dep_mounts:
        mounts.append(containers.Mount(deps[dep].entry / inside, target, read_only=True))
    run_build(ws, spec.name, builder.tag, spec.script, mounts, out, spec.progress,
              spec.env(request, builder, comp))  # fmt: skip


def _inputs(
    spec: Spec[Any],
    comp: Component,
    ws: Workspace,
    builder: containers.BuilderImage,
    request: Request,
    tree: SourceTree,
    deps: Mapping[str, Built[Any]],
    out: Path,
) -> BuildInputs:
    sources = {spec.name: spec.source_name, **{d.name: d.source_name for d in spec.depends}}
    provenance = {spec.name: tree.provenance}
    for dep in deps:
        # A dependency built earlier (cached) came from its work tree, if still its pin's.
        provenance[dep] = work_tree_provenance(ws, ws.component(sources[dep]))
    toolchain = out / TOOLCHAIN
    return BuildInputs(
        sources={n: SourceRecord.of(ws.component(src)) for n, src in sources.items()},
        provenance=provenance,
        local_trees={
            n: str(request.trees[src]) if src in request.trees else None
            for n, src in sources.items()
        },
        series_applied=request.apply,
        builder_image=BuilderRecord(builder.tag, builder.id),
        toolchain=tuple(toolchain.read_text().splitlines()) if toolchain.is_file() else (),
        options=spec.options(request, comp),
    )


def _publish(spec: Spec[Any], entry: Path, dest: Path) -> Path:
    """Replace *dest* with what *spec* publishes of the cache *entry*."""
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in spec.publish:
        source = entry / item.rstrip("/")
        if item.endswith("/"):
            shutil.copytree(source, tmp, symlinks=True, dirs_exist_ok=True)
        elif source.exists():
            shutil.copy2(source, tmp / source.name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# -- the build container ---------------------------------------------------------------


@dataclass
class Progress:
    """One status line for a long build: component, elapsed time, current target."""

    component: str
    pattern: re.Pattern[str]
    started: float = field(default_factory=time.monotonic)
    last: float = 0.0
    tty: bool = field(default_factory=lambda: sys.stderr.isatty())

    def __call__(self, line: str) -> None:
        m = self.pattern.search(line)
        now = time.monotonic()
        if not m or (not self.tty and now - self.last < 15):
            return
        self.last = now
        what = next((g for g in m.groups() if g), m.group(0))
        text = f"[{self.component}] {now - self.started:5.0f}s  {what[:70]}"
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
        log.info("[%s] built in %.0f s", self.component, time.monotonic() - self.started)


def run_build(
    ws: Workspace,
    component: str,
    image: str,
    script: str,
    mounts: list[containers.Mount],
    out: Path,
    progress: re.Pattern[str],
    env: dict[str, str] | None = None,
) -> None:
    """Run a build *script* in the builder *image* with a progress line; its log goes to
    ``out/logs/<component>.log`` and into the cache entry *out* as ``build.log``, so a
    cached build still has the log of the build that made it.

    Raises:
        CommandError: the script failed (last lines and the log path in the message).
    """
    line = Progress(component, progress)
    with stage(f"{component} build"):
        containers.run_logged(
            image,
            ["bash", "-c", script],
            mounts=mounts,
            env=env,
            log_path=ws.layout.log(component),
            on_line=line,
            what=f"{component} build",
            labels=ws.labels,
        )
    line.done()
    shutil.copy2(ws.layout.log(component), out / "build.log")
