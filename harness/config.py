"""The run's configuration, resolved once from the command line and the environment.

Tasks call :func:`resolve` and pass the frozen :class:`Config` down; nothing below reads
``out/``, a Debian suite or an environment variable on its own. Every path a run writes
is named here: what depends only on its inputs in the machine's cache, shared by every
clone and workspace, and the rest under one workspace root:

    ~/.cache/harness/          the cache (``HARNESS_CACHE``, else ``$XDG_CACHE_HOME/harness``)
    ├── downloads/             pinned sources, by sha256
    ├── builds/                finished builds, by cache key (every input hashed)
    ├── images/                guest image packages
    └── accel.json             the accelerator probe's verdicts

    out/                       the workspace (``--workspace``, ``HARNESS_WORKSPACE``)
    ├── work/<component>/      source and build trees, kept warm between builds
    ├── logs/<component>.log   the last build's log
    ├── grub/ ovmf/ qemu/      published artefacts (what ``build-*`` made last)
    ├── images/                guest images of ``build-image``
    ├── boot/                  one-off boots of ``./inv boot``
    ├── runs/                  the nightly's and ``patches.check``'s images and boots
    ├── nightly/               the last nightly report
    ├── nightly-history/       every nightly's results.json
    ├── rebase/                workspaces of ``patches.rebase``
    ├── bench/                 benchmark scratch space
    ├── upstream-head/         a workspace of the same shape for ``--upstream head``
    └── upstream-master/       and one for ``--upstream master``
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from harness.errors import ConfigError

#: The repository: the harness's own data (patches, image recipes) lives beside it.
ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "patches"
#: The guest image recipes (``images/<recipe>/recipe.toml``).
RECIPES = ROOT / "images"
#: The Debian release every builder image and guest image is made from, and the Docker
#: image of it the builders start FROM (made with debootstrap when absent).
SUITE = "bookworm"
DEFAULT_BASE = f"debian:{SUITE}"
DEFAULT_WORKSPACE = "out"
#: Environment variables a scheduler may set instead of options.
ENV_WORKSPACE = "HARNESS_WORKSPACE"
ENV_ACCEL = "HARNESS_ACCEL"
ENV_CACHE = "HARNESS_CACHE"
E = TypeVar("E", bound=enum.StrEnum)


class Upstream(enum.StrEnum):
    """Which upstream versions to build: our pins, the newest that Debian has, or
    upstream's development branch at the commit ``upstream.toml``'s ``[master]`` names
    (with the series under ``patches/<component>/master`` where there is one)."""

    PINNED = "pinned"
    HEAD = "head"
    MASTER = "master"


class QemuChoice(enum.StrEnum):
    """Which QEMU runs the boots: the one on PATH or the one ``./inv build-qemu`` made."""

    SYSTEM = "system"
    BUILT = "built"


class LaunchKind(enum.StrEnum):
    """How guests are launched: against the simulated secure element, or on SEV hardware."""

    SIMULATED = "simulated"
    #: The simulated element with an SEV-ES policy: it also measures one VMSA per vCPU.
    SIMULATED_ES = "simulated-es"
    SEV = "sev"
    SEV_ES = "sev-es"

    @property
    def hardware(self) -> bool:
        return self in (LaunchKind.SEV, LaunchKind.SEV_ES)

    @property
    def es(self) -> bool:
        """The guest runs as SEV-ES: policy bit 2, and the digest covers the VMSAs."""
        return self in (LaunchKind.SIMULATED_ES, LaunchKind.SEV_ES)


class AccelChoice(enum.StrEnum):
    """The accelerator: probed once per QEMU and kernel (``auto``), or forced."""

    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


def _choice(kind: type[E], value: str, option: str) -> E:
    try:
        return kind(value)
    except ValueError as err:
        values = [c.value for c in kind]
        known = " or ".join([", ".join(values[:-1]), values[-1]] if len(values) > 2 else values)
        raise ConfigError(f"{option} must be {known}, not {value!r}.") from err


def default_cache(env: Mapping[str, str] | None = None) -> Path:
    """The machine's cache: ``HARNESS_CACHE``, else ``$XDG_CACHE_HOME/harness`` (an
    absolute path, as the XDG spec wants), else ``~/.cache/harness``."""
    env = os.environ if env is None else env
    if chosen := env.get(ENV_CACHE, ""):
        return Path(chosen).expanduser().resolve()
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path(env.get("HOME") or Path.home()) / ".cache"
    return (base / "harness").resolve()


@dataclass(frozen=True)
class Layout:
    """Every path of one workspace root and the cache it uses (see the module docstring)."""

    root: Path
    cache: Path

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    @property
    def builds(self) -> Path:
        return self.cache / "builds"

    @property
    def image_cache(self) -> Path:
        return self.cache / "images"

    def work(self, component: str) -> Path:
        return self.root / "work" / component

    def log(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    def published(self, component: str) -> Path:
        """Where ``build-<component>`` puts what it made."""
        return self.root / component

    @property
    def firmware(self) -> Path:
        return self.published("ovmf") / "OVMF.fd"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def image(self, recipe: str, variant: str) -> Path:
        return self.images / f"{recipe}-{variant}"

    @property
    def boots(self) -> Path:
        return self.root / "boot"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def report(self) -> Path:
        return self.root / "nightly"

    @property
    def history(self) -> Path:
        return self.root / "nightly-history"

    @property
    def rebase(self) -> Path:
        return self.root / "rebase"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def head(self) -> Layout:
        """The workspace ``--upstream head`` builds in, beside the pinned one."""
        return Layout(self.root / "upstream-head", self.cache)

    @property
    def master(self) -> Layout:
        """The workspace ``--upstream master`` builds in."""
        return Layout(self.root / "upstream-master", self.cache)


@dataclass(frozen=True)
class Config:
    """What one run works with; made by :func:`resolve`, never changed afterwards."""

    layout: Layout
    #: The Docker image the builder images start FROM.
    base: str = DEFAULT_BASE
    upstream: Upstream = Upstream.PINNED
    qemu: QemuChoice = QemuChoice.SYSTEM
    accel: AccelChoice = AccelChoice.AUTO
    launch: LaunchKind = LaunchKind.SIMULATED
    #: The pins and series (``patches/<component>``).
    patches: Path = PATCHES

    @property
    def workspace(self) -> Path:
        return self.layout.root

    @property
    def builds(self) -> Layout:
        """Where this run's builds go: the workspace, or its head or master twin."""
        if self.upstream is Upstream.HEAD:
            return self.layout.head
        if self.upstream is Upstream.MASTER:
            return self.layout.master
        return self.layout


def resolve(
    *,
    workspace: str = "",
    base: str = "",
    upstream: str = "",
    qemu: str = "",
    accel: str = "",
    launch: str = "",
    patches: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """The configuration of options (empty: not given) over the environment over the
    defaults; relative paths are made absolute against the current directory.

    Raises:
        ConfigError: a value that is not one of the choices, or an empty base image.
    """
    env = os.environ if env is None else env
    root = workspace or env.get(ENV_WORKSPACE, "") or DEFAULT_WORKSPACE
    if base.strip() != base or (base and ":" not in base and "/" not in base):
        raise ConfigError(f"--base {base!r} is not a Docker image name (e.g. {DEFAULT_BASE}).")
    return Config(
        layout=Layout(Path(root).expanduser().resolve(), default_cache(env)),
        base=base or DEFAULT_BASE,
        upstream=_choice(Upstream, upstream or Upstream.PINNED, "--upstream"),
        qemu=_choice(QemuChoice, qemu or QemuChoice.SYSTEM, "--qemu"),
        accel=_choice(AccelChoice, accel or env.get(ENV_ACCEL, "") or AccelChoice.AUTO, "--accel"),
        launch=_choice(LaunchKind, launch or LaunchKind.SIMULATED, "--launch"),
        patches=patches or PATCHES,
    )
