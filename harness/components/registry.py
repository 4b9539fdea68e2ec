"""The components the harness builds, in build order.

Adding a component: its ``patches/<name>/`` (pin, series, licence), a Dockerfile in
``builders/`` if no existing builder fits, its module here with the build script and a
:class:`~harness.components.pipeline.Spec`, and one line in :data:`COMPONENTS`. The
``build-*`` tasks, ``patches.check`` and the nightly take it from there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args, get_type_hints

from harness import records
from harness.components import grub, linux, ovmf, qemu
from harness.components.pipeline import Role, Spec
from harness.config import QemuChoice
from harness.errors import ConfigError

#: Every component, each after the ones it is built with.
COMPONENTS: tuple[Spec[Any], ...] = (grub.SPEC, grub.ARM64, ovmf.SPEC, qemu.SPEC, linux.SPEC)
#: The builder image guest images are made in and Debian's indexes are read from.
TOOLS_BUILDER = "bookworm"
#: Builds the Debian recipe's root with mmdebstrap (builders/Dockerfile.debian).
DEBIAN_IMAGE_BUILDER = "debian"


def names() -> tuple[str, ...]:
    return tuple(spec.name for spec in COMPONENTS)


def get(name: str) -> Spec[Any]:
    """The component *name*.

    Raises:
        ConfigError: there is none.
    """
    for spec in COMPONENTS:
        if spec.name == name:
            return spec
    raise ConfigError(f"There is no component {name!r}; known: {', '.join(names())}.")


def with_role(role: Role) -> Spec[Any]:
    """The one component that plays *role* in the boots."""
    (spec,) = (s for s in COMPONENTS if s.role is role)
    return spec


def for_boots(qemu_choice: QemuChoice) -> tuple[Spec[Any], ...]:
    """The components a night builds: all, but the emulator only when the boots run
    the built one."""
    return tuple(
        s for s in COMPONENTS if s.role is not Role.EMULATOR or qemu_choice is QemuChoice.BUILT
    )


#: The JSON Schemas of the manifests, derived from their dataclasses.
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def manifest_schema(spec: Spec[Any]) -> dict[str, Any]:
    """The JSON Schema of *spec*'s ``manifest.json``."""
    (name,) = get_args(get_type_hints(spec.manifest_type)["schema"])
    schema: dict[str, Any] = records.schema(
        spec.manifest_type,
        f"https://harness.invalid/schemas/{spec.name}-manifest.schema.json",
        f"{spec.name} build manifest ({name})",
    )
    return schema


def write_schemas() -> list[Path]:
    """Write ``schemas/<component>-manifest.schema.json`` for every component (run after
    changing a manifest: ``.venv/bin/python -m harness.components.registry``)."""
    written = []
    for spec in COMPONENTS:
        path = SCHEMAS / f"{spec.name}-manifest.schema.json"
        path.write_text(json.dumps(manifest_schema(spec), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written in write_schemas():
        print(f"wrote {written}")
