"""``./inv boot``: one scenario (or an interactive boot) for a firmware and an image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.boots import extras, matrix, ordinary, phases, scenarios
from harness.boots.prepare import Firmware, HostDisk, Machine, Target, prepared, select_qemu
from harness.boots.result import Result
from harness.boots.runner import run_scenario
from harness.components import registry
from harness.components.pipeline import builder_image
from harness.components.workspace import Workspace
from harness.config import Config, LaunchKind
from harness.errors import ConfigError, InputError
from harness.guest import image, imagemeta
from harness.host import console, doctor, qemu
from harness.host.sev import HostSev
from harness.sev import owner
from harness.sev.chain import DEFAULT_TRUST, PlatformTrust


def expected_digest(firmware: Path) -> bytes:
    """The digest the guest owner expects: from the build manifest next to the firmware."""
    manifest = firmware.parent / "manifest.json"
    if not manifest.is_file():
        raise InputError(
            f"{manifest} is missing: the guest owner has no digest to expect.",
            hint="boot a firmware made by ./inv build-ovmf",
        )
    return owner.manifest_digest(manifest)


def boot(
    cfg: Config,
    name: str,
    firmware: Path,
    image_dir: Path,
    interactive: bool,
    entries: Sequence[str] = (),
    trust: PlatformTrust = DEFAULT_TRUST,
) -> Result | None:
    """One scenario with *firmware* (its manifest beside it) and the image in
    *image_dir*, or an interactive boot; None for the latter.

    *entries* (``--entry GUID:FILE``) replace the default secrets beside the passphrase.
    *trust* (``--allow-naples``, ``--cek``) is what the owner accepts of a hardware
    platform's chain; a simulated launch's chain is the simulated element's own.

    Raises:
        ConfigError: no such scenario, an image of another recipe, entries for a
            scenario that injects no table, or a bad entry.
        InputError: an entry's file is missing, unreadable or not private.
        SecretFormatError: the entries do not fit the firmware's secret block.
        PrerequisiteError: the QEMU the configuration names is not there, or the host
            cannot launch *kind* (checked before anything starts).
    """
    kind = cfg.launch
    if trust != DEFAULT_TRUST and not kind.hardware:
        raise ConfigError(
            "--allow-naples and --cek judge an SEV hardware platform's chain; this launch "
            f"is {kind.value}.",
            hint="--launch sev or --launch sev-es",
        )
    emulator = select_qemu(cfg)  # a missing built QEMU is said before anything starts
    if name == ordinary.NAME:
        return _ordinary(cfg, firmware, image_dir, interactive, entries, emulator)
    HostSev.probe().require(kind)
    if name not in scenarios.SCENARIOS:
        raise ConfigError(f"No scenario {name!r}; known: {', '.join(scenarios.SCENARIOS)}.")
    scenario = scenarios.SCENARIOS[name]
    if entries and not scenario.injects:
        raise ConfigError(f"{name} injects no secret table, so --entry has nowhere to go.")
    given = extras.read_entries(entries)
    img = imagemeta.load(image_dir)
    if not scenario.takes(img.metadata.recipe):
        raise ConfigError(
            f"{name} boots an image of the {scenario.recipe} recipe; {image_dir} holds "
            f"one of the {img.metadata.recipe} recipe.",
            hint=f"./inv build-image --recipe {scenario.recipe} --out DIR, then --image DIR",
        )
    machine = Machine.of(cfg, emulator)
    target = Target.of(Firmware(firmware.resolve(), expected_digest(firmware)), img, given, trust)
    workdir = cfg.layout.boots / f"{name}-{img.variant}"
    host_disk = _host_disk(cfg) if scenario.needs_host_disk else None
    if not interactive:
        return run_scenario(scenario, target, machine, workdir, host_disk)
    # The same launch as the scenario (secret injected or not), then the terminal
    # belongs to the person watching.
    with prepared(scenario, target, machine, workdir, host_disk) as launch:
        for note in launch.notes:
            print(note)
        print("serial console follows; Ctrl-] leaves")
        console.interact(launch.cfg.argv())
    return None


def _ordinary(
    cfg: Config,
    firmware: Path,
    image_dir: Path,
    interactive: bool,
    entries: Sequence[str],
    emulator: qemu.Qemu,
) -> Result:
    """The post's ordinary path (:mod:`harness.boots.ordinary`): Debian's OVMF unless
    *firmware* names another, no launch, no secret."""
    if entries or interactive or cfg.launch is not LaunchKind.SIMULATED:
        raise ConfigError(
            "The ordinary boot injects nothing and launches no SEV guest; it takes no "
            "--entry, --interactive or --launch."
        )
    img = imagemeta.load(image_dir)
    ordinary.require_own_bootloader(img)
    fw = qemu.DEBIAN_OVMF if firmware == cfg.layout.firmware else firmware.resolve()
    if fw == qemu.DEBIAN_OVMF:
        doctor.require(("ovmf",))
    workdir = cfg.layout.boots / f"{ordinary.NAME}-{img.variant}"
    return ordinary.run_ordinary(img, Machine.of(cfg, emulator), workdir, fw)


def _host_disk(cfg: Config) -> HostDisk:
    """A fresh disk of the hostile host's own (its passphrase and grub.cfg)."""
    tools = builder_image(registry.TOOLS_BUILDER, Workspace.of(cfg))
    img = image.build_image(
        matrix.HOST_RECIPE,
        matrix.HOST_VARIANT,
        cfg.layout.boots / matrix.HOST_RECIPE,
        cfg.layout.image_cache,
        tools.tag,
    )
    return HostDisk.of(img)


def render(result: Result) -> str:
    return (
        f"{result.outcome.short} {result.scenario} ({result.variant}) in {result.seconds:.1f} s: "
        f"{result.detail}\n  transcript: {result.transcript}"
        + (f"\n  seconds by stage: {phases.render(result.phases)}" if result.phases else "")
    )
