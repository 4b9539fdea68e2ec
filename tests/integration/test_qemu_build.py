"""Real QEMU builds: the pin into the main workspace, a test series, and a boot with it.

``patches/qemu`` is empty, so the series machinery is exercised with a small patch made
here, with git, from the unpacked tree in ``out/work/qemu/src``: it adds a line to
``--version``. The builds share that tree, so the patched build and the one after it
are incremental. Their cache entries stay in the machine's cache like any other: the
first run on a machine builds them, and a later clone finds them under the same inputs
(the builds are reproducible: test_first_run, and the pin again below).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest

from harness import run
from harness.boots import scenarios
from harness.boots.prepare import Firmware, Machine, Target
from harness.boots.runner import run_scenario
from harness.components import ovmf, registry
from harness.components import qemu as qemu_build
from harness.components.pipeline import builder_image
from harness.components.trees import prepare_tree
from harness.components.workspace import Workspace
from harness.guest.image import build_image
from harness.guest.imagemeta import LuksVariant
from harness.host import qemu
from harness.upstream.patchset import GIT_ENV, read_series
from tests.conftest import CACHE, IMAGE_CACHE, ROOT, tools_builder

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    # A cold build takes about four minutes on two cores; a loaded CI host gets more.
    pytest.mark.timeout(2400),
]
OUT = ROOT / "out"
MARKER = "harness test series applied"


@pytest.fixture(scope="module")
def built() -> qemu_build.QemuBuild:
    return qemu_build.build_qemu(Workspace(OUT))


def version_text(emulator: qemu.Qemu) -> str:
    return run.run([*emulator.command(), "--version"]).stdout.decode()


def test_build_of_the_pin_runs_and_is_cached(built: qemu_build.QemuBuild) -> None:
    published = qemu_build.published(OUT / "qemu")
    text = version_text(published)
    assert text.startswith("QEMU emulator version 10.0.13 (harness)\n"), text
    assert MARKER not in text
    manifest = built.manifest
    assert manifest.output.version == "10.0.13"
    assert manifest.inputs.sources["qemu"].patches == ()
    assert "kvmvapic.bin" in manifest.output.option_roms
    published_manifest = json.loads((OUT / "qemu" / "manifest.json").read_text())
    schema = json.loads((registry.SCHEMAS / "qemu-manifest.schema.json").read_text())
    jsonschema.validate(published_manifest, schema)
    again = qemu_build.build_qemu(Workspace(OUT))
    assert again.cached and again.manifest == manifest


def make_test_series(src: Path, dest: Path) -> Path:
    """``dest/qemu``: the pin, and one patch made with git against ``harness-base``."""
    qemu_dir = dest / "qemu"
    qemu_dir.mkdir(parents=True)
    for name in ("upstream.toml", "COPYING"):
        shutil.copy2(ROOT / "patches" / "qemu" / name, qemu_dir / name)
    clone = dest / "clone"

    def git(*args: str) -> str:
        return run.run(["git", "-C", str(clone), *args], env=GIT_ENV).stdout.decode()

    run.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(src), str(clone)])
    git("reset", "--quiet", "harness-base")  # the index only: check out one file
    git("checkout", "harness-base", "--", "system/vl.c")
    vl = clone / "system" / "vl.c"
    old = 'QEMU_COPYRIGHT "\\n");'
    text = vl.read_text()
    assert text.count(old) == 1, "system/vl.c's version() changed: adapt the test patch"
    vl.write_text(text.replace(old, f'QEMU_COPYRIGHT "\\n"\n           "{MARKER}\\n");'))
    git("commit", "--quiet", "--signoff", "-m", "system/vl: Say so when the test series is applied",
        "--", "system/vl.c")  # fmt: skip
    patch = qemu_dir / "0001-system-vl-test-series.patch"
    # --zero-commit: the base commit's id differs between clones (its message names
    # where the source came from), and the patch's bytes are part of the cache key.
    patch.write_text(git("format-patch", "--zero-commit", "-1", "--stdout"))
    (qemu_dir / "series").write_text(f"# a test series\n{patch.name}\n")
    shutil.rmtree(clone)
    return dest


@pytest.mark.long
def test_a_series_change_is_a_build_of_its_own(built: qemu_build.QemuBuild, tmp_path: Path) -> None:
    """The test series is a cache key of its own, and what is built under it carries the
    patch; the same pin with the series not applied is the pin's output, byte for byte.
    The first run on a machine builds both (incrementally, in one tree); a later run finds
    them under the same inputs, which the key names exactly (the series' bytes among them)."""
    main = Workspace(OUT)
    src = main.layout.work("qemu") / "src"
    if not (src / ".git").is_dir():  # the pin came from the cache; unpack it
        builder = builder_image("qemu", main)
        with main.locked():
            prepare_tree(main.component("qemu"), main, builder.tag)
    ws = Workspace(OUT, patches=make_test_series(src, tmp_path / "patches"))
    (patch,) = read_series(ws.patches / "qemu")
    assert patch.signed_off
    patched = qemu_build.build_qemu(ws)
    assert patched.entry != built.entry
    assert patched.manifest.inputs.sources["qemu"].patches[0].sha256 == patch.sha256
    assert MARKER in version_text(qemu_build.emulator(patched))
    # The same pin without the series: the tree is reset and the output is the pin's
    # again (the build is reproducible, so byte for byte).
    unpatched = qemu_build.build_qemu(ws, apply=False)
    assert unpatched.entry not in (built.entry, patched.entry)
    assert MARKER not in version_text(qemu_build.emulator(unpatched))
    assert unpatched.manifest.output.sha256 == built.manifest.output.sha256
    print(
        f"series change: {patched.manifest.build_seconds} s "
        f"({'cached' if patched.cached else 'built'}), back: "
        f"{unpatched.manifest.build_seconds} s ({'cached' if unpatched.cached else 'built'})"
    )
    normal = qemu_build.build_qemu(main)
    assert normal.cached and MARKER not in version_text(qemu_build.emulator(normal))


@pytest.mark.tools
def test_passwordless_boot_with_the_built_qemu(built: qemu_build.QemuBuild, tmp_path: Path) -> None:
    firmware = ovmf.build_ovmf(Workspace(OUT))
    builder = tools_builder()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    img = build_image(
        "minimal",
        LuksVariant.LUKS1,
        OUT / "images" / f"test-qemu-{worker}-luks1",
        IMAGE_CACHE,
        builder.tag,
    )
    # A private copy: another worker may publish out/qemu while this guest runs.
    emulator = qemu_build.emulator(built)
    accel = qemu.working_accelerator(CACHE, qemu.DEBIAN_OVMF, emulator)
    result = run_scenario(
        scenarios.SCENARIOS["passwordless"],
        Target.of(Firmware(ovmf.firmware(firmware), firmware.manifest.launch_digest), img),
        Machine(accel, emulator),
        tmp_path / "boot",
    )
    assert result.passed, result.detail
    transcript = result.transcript.read_text()
    assert "Enter passphrase" not in transcript
    assert "qemu-system-x86_64:" not in transcript  # no warning (a missing ROM, say)
