"""One scenario booted and judged: :func:`run_scenario`, a verdict, never an exception
for what the guest did."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from harness.boots import launch as owner_flow
from harness.boots import linux, phases, verdicts
from harness.boots.prepare import HardwarePlan, HostDisk, Launch, Machine, Target, prepared
from harness.boots.result import Result
from harness.boots.scenarios import (
    FIRST_BOOT,
    HOSTILE_TIMEOUT,
    LOGIN_TIMEOUT,
    REFUSAL_TIMEOUT,
    Scenario,
    Secret,
    play_on,
    play_on_image,
)
from harness.boots.verdicts import Ending, Host
from harness.errors import (
    GuestVerdict,
    InfrastructureError,
    VerificationError,
)
from harness.firmware.guidtable import MemoryBlock
from harness.guest import cryptdisk, proof
from harness.guest.imagemeta import GuestKernel, Ready
from harness.guest.report import REMOVE_SECRET_GUID
from harness.host import qemu
from harness.host.console import Console
from harness.host.sev import SevMonitor
from harness.sev.malformed import PASSPHRASE_OUT_OF_REACH
from harness.verdict import Verdict

log = logging.getLogger(__name__)


def run_scenario(
    scenario: Scenario,
    target: Target,
    machine: Machine,
    workdir: Path,
    host_disk: HostDisk | None = None,
) -> Result:
    """Run one scenario on *target* and *machine*, end to end; a verdict, never an
    exception for guest behaviour.

    The transcript is ``workdir/console.log``; *host_disk* is the host's own disk, for
    the scenarios that launch or attach it. On an image with our kernel, what Linux
    lists is judged too (:mod:`harness.boots.linux`). An image that shows it booted by
    a distribution's login prompt (its ``ready``) must never ask for the passphrase in
    its initramfs either, and may take LOGIN_TIMEOUT. The result carries the image's
    LUKS variant.

    Raises:
        ConfigError, SecretFormatError: see :func:`harness.boots.prepare.prepared`.
    """
    transcript = workdir / "console.log"
    started = time.monotonic()
    console: Console | None = None
    gone: float | None = None
    proof_key = proof.read_key(target.image.disk.parent)
    with prepared(scenario, target, machine, workdir, host_disk) as launch:
        notes = launch.notes
        redact = tuple(
            p.value
            for p in (target.passphrase, launch.wrong, host_disk and host_disk.passphrase)
            if p
        )
        try:
            with qemu.running(
                launch.cfg,
                transcript,
                redact,
                scenario.allowed_errors,
                scenario.expected_failures,
            ) as guest:
                console = guest.console
                if launch.hardware is not None:
                    notes += _over_qmp(guest, launch.hardware, launch.area)

                def play(p: verdicts.Play) -> None:
                    proved = verdicts.play(
                        p,
                        guest.console,
                        token=target.image.token,
                        passphrase=target.passphrase,
                        wrong=launch.wrong,
                        host_typed=host_disk.passphrase if host_disk else None,
                        timeout=_timeout(scenario, target.ready, machine.timeout),
                        exit_timeout=REFUSAL_TIMEOUT,
                        proof=proof.Proof(launch.nonce, proof_key, launch.proof_source),
                    )
                    if proved:
                        notes.append(proved)

                if scenario.host is Host.RESET:
                    play(play_on_image(FIRST_BOOT, Host.PASSIVE, target.ready))
                    guest.reset()
                    notes.append("the host reset the guest once the owner's root had booted")
                play(play_on(scenario, target.ready))
                notes += _after_boot(scenario, guest, launch, target, workdir, machine.timeout)
                notes += _after_wipe(scenario, guest, launch, workdir)
                notes += _check_ram(scenario, guest, launch, target)
            gone = time.monotonic()
            _check_refusal(scenario, notes)
            passed, detail = True, "; ".join(notes) or "as expected"
        except (GuestVerdict, VerificationError) as err:
            passed, detail = False, str(err)
    total = time.monotonic() - started
    return Result(
        scenario.name,
        target.image.variant.value,
        Verdict.of(passed),
        detail,
        total,
        transcript,
        tuple(notes),
        _phases(console, started, gone, total),
    )


def _phases(
    console: Console | None, started: float, gone: float | None, total: float
) -> dict[str, float]:
    """Where the boot's seconds went (:mod:`harness.boots.phases`); nothing when QEMU
    never started."""
    if console is None or console.read_times is None:
        return {}
    spawned = console.read_times.start
    guest_done = (gone if gone is not None else started + total) - spawned
    return phases.split(spawned - started, console.landmarks(phases.LANDMARKS), guest_done, total)


def _timeout(scenario: Scenario, ready: Ready, timeout: float) -> float:
    if ready is Ready.LOGIN:
        return max(timeout, LOGIN_TIMEOUT)
    return HOSTILE_TIMEOUT if scenario.host is not Host.PASSIVE else timeout


def _over_qmp(guest: qemu.Guest, plan: HardwarePlan, area: MemoryBlock) -> list[str]:
    """Verify the paused launch, inject the secret at the block the owner verified, cont."""
    if guest.qmp is None:
        raise InfrastructureError("No QMP connection to the paused SEV guest.")
    return owner_flow.hardware_launch(
        SevMonitor(guest.qmp), plan.owner, plan.session, plan.table, area.base
    )


def _check_refusal(scenario: Scenario, notes: list[str]) -> None:
    """The defence the scenario plays against must be the one that held.

    Raises:
        VerificationError: the launch did not note the expected refusal (the guest may
            still have prompted, for another reason).
    """
    wanted = scenario.expect_note
    if wanted is not None and not any(note.startswith(wanted) for note in notes):
        raise VerificationError(
            f"The launch did not end with '{wanted}'; it noted: {'; '.join(notes) or 'nothing'}."
        )


def _after_boot(
    scenario: Scenario,
    guest: qemu.Guest,
    launch: Launch,
    target: Target,
    workdir: Path,
    timeout: float,
) -> list[str]:
    """Once the guest booted: Linux's report (our kernel), then the secret page read
    after the guest powered off, judged for GRUB's wipe, against Linux's listing and
    for the removal."""
    if scenario.ending is not Ending.BOOTS:
        return []
    report = None
    if target.guest_kernel is GuestKernel.BUILT:
        report = verdicts.await_report(guest.console, timeout)
    tail = guest.console.tail()
    notes = []
    if report is not None:
        notes.append(linux.judge_report(report, scenario.linux_sees, launch.extras, tail))
    if not launch.page_after:
        return notes
    page = _read_page(guest, launch, workdir)
    if scenario.secret is Secret.PLANTED and scenario.planted not in PASSPHRASE_OUT_OF_REACH:
        notes.append(verdicts.check_planted_page(page, target.passphrase, tail))
    if scenario.check_wipe:
        injected = target.passphrase if scenario.secret is Secret.GOOD else launch.wrong
        notes.append(verdicts.check_wipe(page, injected, launch.extras, tail))
    if report is not None:
        notes.append(linux.compare_page(report, page, tail))
        if scenario.removes and launch.table is not None:
            notes.append(linux.check_removal(report, page, launch.table, REMOVE_SECRET_GUID, tail))
    return notes


#: GRUB wipes 3 KiB and powers off at once; a loaded CI host gets a generous margin.
WIPE_TIMEOUT = 60.0


def _after_wipe(scenario: Scenario, guest: qemu.Guest, launch: Launch, workdir: Path) -> list[str]:
    """Once GRUB said it gives up on the owner's table: the guest must power off (a
    reset is a verdict, never a quiet exit: a plain SEV guest keeps its memory over a
    reset), and in simulated launches the secret area must then be all zero.

    Raises:
        GuestVerdict: the guest reset, did not stop, or left something in the area.
    """
    if scenario.ending is not Ending.WIPES or guest.qmp is None:
        return []
    reason = guest.wait_shutdown(WIPE_TIMEOUT)
    tail = guest.console.tail()
    if reason is None:
        raise GuestVerdict(
            f"GRUB said it wipes the area, but the guest did not stop within {WIPE_TIMEOUT:g} s.",
            "timeout",
            tail,
        )
    if reason != "guest-shutdown":
        raise GuestVerdict(
            f"The guest stopped by {reason}, not by powering off: a reset hands the host "
            "another boot over the same memory.",
            "reset",
            tail,
        )
    notes = ["the guest powered off"]
    if launch.page_after:
        notes.append(verdicts.check_area_wiped(_read_page(guest, launch, workdir), tail))
    return notes


def _check_ram(scenario: Scenario, guest: qemu.Guest, launch: Launch, target: Target) -> list[str]:
    """Nothing outlives its use: once the guest is done, all of its RAM (which the
    harness holds) is searched for the passphrase (where it reached the guest other than
    typed on the host's console, where the host saw it anyway) and, when the image's own
    kernel never opens the root, for each half of the volume key GRUB used
    (:func:`_handed_over`).

    Raises:
        GuestVerdict: key material is still in RAM.
    """
    if launch.ram is None or launch.private is None:
        return []
    needles: dict[str, bytes] = {}
    # The passphrase, where it reached the guest other than by the owner typing it.
    if scenario.secret is not Secret.NONE and not any(scenario.typed):
        needles["the passphrase"] = target.passphrase.value
    if _key_must_be_gone(scenario, target.guest_kernel, target.ready):
        key = cryptdisk.disk_volume_key(launch.cfg.disk, target.passphrase, launch.private)
        half = len(key) // 2
        needles["the volume key's first half"] = key[:half]
        needles["the volume key's second half"] = key[half:]
        del key
    if not needles:
        return []
    guest.freeze()  # a guest at its login prompt runs on; the verdict is known
    extents = launch.ram.touched()
    found = launch.ram.count(needles, extents)
    touched = sum(end - start for start, end in extents)
    return [verdicts.check_ram(found, touched, guest.console.tail())]


def _key_must_be_gone(scenario: Scenario, guest_kernel: GuestKernel, ready: Ready) -> bool:
    """Whether no copy of the volume key may be in RAM once the guest is done: GRUB
    opened the owner's disk (:func:`_handed_over`) and no kernel holds the key by design.
    Our kernel and a distribution's initramfs open the root with dm-crypt; Debian's
    kernel on the minimal image never does; where GRUB booted nothing, or the kernel
    could not open the root (HALTS), none does.
    """
    if not _handed_over(scenario):
        return False
    if scenario.ending is Ending.HALTS:
        return True
    return guest_kernel is GuestKernel.DEBIAN and ready is Ready.MARKER


def _handed_over(scenario: Scenario) -> bool:
    """Whether GRUB opened the owner's disk and then handed over to a kernel (or
    stopped for good), so that no key of that disk may be left in RAM. Our kernel
    (built) and a distribution's (login) open the root with dm-crypt and hold the volume
    key themselves; Debian's kernel on the minimal image never does, so there the key
    must be gone.

    Halting counts: GRUB that boots nothing and stalls with its CLI locked wipes the keys
    as it stalls (patches/grub 0013). So does a reset: the first boot handed over. Not
    when the owner's disk is not the one launched.
    """
    if scenario.host is Host.RESET:
        return True
    if scenario.host in (Host.OWNER_DISK_MISSING, Host.IMPOSTOR, Host.PASSPHRASE_SLOT):
        return False
    return scenario.ending in (Ending.BOOTS, Ending.STOPS, Ending.HALTS)


def _read_page(guest: qemu.Guest, launch: Launch, workdir: Path) -> bytes:
    """The secret page after the guest powered off. QEMU writes it into the launch's
    private (0700) directory, never beside the transcript, and it is not kept."""
    dump = (launch.private or workdir) / "secret-page.bin"
    try:
        return verdicts.read_page(guest.pmemsave, launch.area.base, launch.area.size, dump)
    finally:
        dump.unlink(missing_ok=True)
