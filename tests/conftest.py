"""Shared fixtures and the rule that CI never skips for a missing tool.

Tests under tests/unit are marked ``unit`` automatically. Markers that name a
prerequisite (``qemu``, ``docker``, ``tools``, ``kvm``) skip with a reason when it is
absent, except under ``CI=true``, where a missing prerequisite fails the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.components import registry
from harness.components.pipeline import builder_image
from harness.components.workspace import Workspace
from harness.config import default_cache
from harness.host import containers, doctor, engine, qemu

# Secret files (passphrases, transport keys, extra secrets) are refused when group or
# others may read them; the tests make every file as a careful owner would, and the
# tests of that refusal loosen the mode themselves.
os.umask(0o077)

ROOT = Path(__file__).resolve().parent.parent
#: The machine's cache, as every clone uses it (harness.config.default_cache).
CACHE = default_cache()
#: Pinned archives, by sha256: fetched once per machine.
SHARED_DOWNLOADS = CACHE / "downloads"
#: Guest image packages.
IMAGE_CACHE = CACHE / "images"
DATA = Path(__file__).resolve().parent / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def tools_builder(name: str = registry.TOOLS_BUILDER) -> containers.BuilderImage:
    """A builder image of the main workspace (made FROM the default base)."""
    return builder_image(name, Workspace(ROOT / "out"))


def _docker_up() -> str | None:
    try:
        engine.docker_client(timeout=5)
    except Exception as err:
        return f"Docker engine not reachable ({err})"
    return None


def _tools_present() -> str | None:
    missing = [r.name for r in doctor.REQUIREMENTS if r.name != "docker" and not r.present()]
    return f"missing host tools: {', '.join(missing)}" if missing else None


def _kvm_usable() -> str | None:
    return None if os.access("/dev/kvm", os.R_OK | os.W_OK) else "/dev/kvm not usable"


def _qemu_present() -> str | None:
    return None if shutil.which("qemu-system-x86_64") else "qemu-system-x86_64 not installed"


PREREQUISITES: dict[str, Callable[[], str | None]] = {
    "docker": _docker_up,
    "tools": _tools_present,
    "qemu": _qemu_present,
    "kvm": _kvm_usable,
}
_cache: dict[str, str | None] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if (DATA.parent / "unit") in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.unit)
    # The tests of minutes first, the rest in their order: a free worker takes the next
    # test (./inv test), so the long ones run side by side and the short fill in after.
    # What reads a long test's shared result (the night with the Debian variant) goes
    # last, so that no worker waits for it.
    items.sort(key=_turn)


def _turn(item: pytest.Item) -> int:
    if item.get_closest_marker("long") is not None:
        return 0
    return 2 if "night_with_debian" in getattr(item, "fixturenames", ()) else 1


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name, check in PREREQUISITES.items():
        if item.get_closest_marker(name) is None:
            continue
        if name not in _cache:
            _cache[name] = check()
        reason = _cache[name]
        if reason is None:
            continue
        if IN_CI:
            pytest.fail(f"CI must not skip: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def debian_ovmf() -> Path:
    """Debian's stock OVMF.fd (package ovmf): a real OvmfPkgX64 build, no secret block."""
    if not qemu.DEBIAN_OVMF.exists():
        if IN_CI:
            pytest.fail("CI must not skip: Debian's ovmf package is not installed", pytrace=False)
        pytest.skip("Debian's ovmf package is not installed")
    return qemu.DEBIAN_OVMF


@pytest.fixture(scope="session")
def amdsev_tail() -> bytes:
    """The AmdSev reset-vector tail under tests/data (see tests/data/README.md)."""
    return (DATA / "amdsev-tail.bin").read_bytes()


def workspace(root: Path, patches: Path | None = None, *, cold: bool = False) -> Workspace:
    """A workspace of its own under *root*, on the machine's cache (builds by key,
    downloads by sha256), as every clone is. *cold*: a cache of its own under *root*, for
    the tests that must see a build happen; its downloads are still the machine's
    (pinned archives are fetched once per machine, not once per test)."""
    if not cold:
        return Workspace(root, patches or ROOT / "patches")
    SHARED_DOWNLOADS.mkdir(parents=True, exist_ok=True)
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    link = cache / "downloads"
    if not link.exists():
        link.symlink_to(SHARED_DOWNLOADS)
    return Workspace(root, patches or ROOT / "patches", cache_root=cache)
