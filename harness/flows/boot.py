"""``./inv boot``: one scenario (or an interactive boot) for a firmware and an image."""

from __future__ import annotations

import enum
from pathlib import Path

from harness.boots import matrix, scenarios
from harness.boots.verdicts import Host
from harness.components import qemu as qemu_build
from harness.errors import ConfigError, InputError
from harness.guest import image
from harness.host import console, containers, qemu
from harness.passphrase import Passphrase
from harness.sev import owner

OUT = Path("out").resolve()


def expected_digest(firmware: Path) -> bytes:
    """The digest the guest owner expects: from the build manifest next to the firmware."""
    manifest = firmware.parent / "manifest.json"
    if not manifest.is_file():
        raise InputError(
            f"{manifest} is missing: the guest owner has no digest to expect.",
            hint="boot a firmware made by ./inv build-ovmf",
        )
    return owner.manifest_digest(manifest)


class QemuChoice(enum.StrEnum):
    """Which QEMU runs the boot: the one on PATH or the one ./inv build-qemu made."""

    SYSTEM = "system"
    BUILT = "built"


def select_qemu(choice: str, out: Path = OUT) -> qemu.Qemu:
    """The QEMU *choice* names.

    Raises:
        ConfigError: an unknown choice.
        PrerequisiteError: ``built`` and there is no build in ``out/qemu``.
    """
    try:
        which = QemuChoice(choice)
    except ValueError as err:
        known = ", ".join(c.value for c in QemuChoice)
        raise ConfigError(f"--qemu {choice!r} is not one of {known}.") from err
    if which is QemuChoice.SYSTEM:
        return qemu.SYSTEM
    return qemu_build.published(out / "qemu")


def boot(
    name: str,
    firmware: Path,
    image_dir: Path,
    interactive: bool,
    emulator: qemu.Qemu = qemu.SYSTEM,
) -> scenarios.Result | None:
    if name not in scenarios.SCENARIOS:
        raise ConfigError(f"No scenario {name!r}; known: {', '.join(scenarios.SCENARIOS)}.")
    scenario = scenarios.SCENARIOS[name]
    img = image.load(image_dir)
    if img.metadata.recipe != scenario.recipe:
        raise ConfigError(
            f"{name} boots an image of the {scenario.recipe} recipe; {image_dir} holds "
            f"one of the {img.metadata.recipe} recipe.",
            hint=f"./inv build-image --recipe {scenario.recipe} --out DIR, then --image DIR",
        )
    accel = qemu.working_accelerator(OUT / "cache", qemu.DEBIAN_OVMF, emulator)
    digest = expected_digest(firmware)
    passphrase = Passphrase.read(img.passphrase_file)
    workdir = OUT / "boot" / f"{name}-{img.variant}"
    host_disk = _host_disk() if scenario.host is Host.FOREIGN_DISK else None
    if not interactive:
        return scenarios.run_scenario(
            scenario,
            firmware=firmware.resolve(),
            expected_digest=digest,
            disk=img.disk,
            passphrase=passphrase,
            token=img.token,
            variant=img.variant.value,
            workdir=workdir,
            accel=accel,
            emulator=emulator,
            host_disk=host_disk,
        )
    # The same launch as the scenario (secret injected or not), then the terminal
    # belongs to the person watching.
    with scenarios.prepared(
        scenario,
        firmware=firmware.resolve(),
        expected_digest=digest,
        disk=img.disk,
        passphrase=passphrase,
        workdir=workdir,
        accel=accel,
        emulator=emulator,
        host_disk=host_disk,
    ) as launch:
        for note in launch.notes:
            print(note)
        print("serial console follows; Ctrl-] leaves")
        console.interact(launch.cfg.argv())
    return None


def _host_disk() -> scenarios.HostDisk:
    """A fresh disk of the hostile host's own (its passphrase and grub.cfg)."""
    builder = containers.ensure_builder("bookworm")
    img = image.build_image(
        matrix.HOST_RECIPE,
        matrix.HOST_VARIANT,
        OUT / "boot" / matrix.HOST_RECIPE,
        OUT / "cache" / "images",
        builder.tag,
    )
    return scenarios.HostDisk(img.disk, Passphrase.read(img.passphrase_file))


def render(result: scenarios.Result) -> str:
    return (
        f"{result.outcome.short} {result.scenario} ({result.variant}) in {result.seconds:.1f} s: "
        f"{result.detail}\n  transcript: {result.transcript}"
    )
