"""The guest kernel: the pinned Linux with patches/linux/guest.config, built in its
builder container into the main workspace (cold once, then from the build cache)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from harness.components import linux, registry
from harness.components.pipeline import build
from harness.components.workspace import Workspace
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    # A cold build takes about twelve minutes on two cores; a loaded CI host gets more.
    pytest.mark.timeout(3600),
]
OUT = ROOT / "out"


@pytest.fixture(scope="module")
def built() -> linux.KernelBuild:
    return build(linux.SPEC, Workspace(OUT))


def test_the_kernel_carries_a_configuration_with_efi_secret(built: linux.KernelBuild) -> None:
    """The evidence is the bzImage's own configuration (IKCONFIG), not the build tree's."""
    image = (OUT / "linux" / linux.BZIMAGE).read_bytes()
    own = linux.parse_config(linux.ikconfig(image))
    assert own["CONFIG_EFI_SECRET"] == "y"
    assert own["CONFIG_EFI_COCO_SECRET"] == "y"
    assert own["CONFIG_DM_CRYPT"] == "y"
    assert own.get("CONFIG_MODULES", "n") == "n"
    assert linux.dropped(linux.parse_config(linux.fragment_text()), own) == []
    out = built.manifest.output
    assert out.release.startswith("6.12.107")
    assert out.fragment["CONFIG_EFI_SECRET"] == "y"
    assert image[0x202:0x206] == b"HdrS"  # the x86 boot protocol's header


def test_the_manifest_validates_and_the_rerun_is_cached(built: linux.KernelBuild) -> None:
    data = json.loads((OUT / "linux" / "manifest.json").read_text())
    jsonschema.validate(data, registry.manifest_schema(linux.SPEC))
    assert data["schema"] == "harness-kernel-manifest/1"
    again = build(linux.SPEC, Workspace(OUT))
    assert again.cached and again.key == built.key
    assert again.manifest.output.sha256 == built.manifest.output.sha256
