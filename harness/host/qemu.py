"""QEMU command lines and the accelerator probe.

KVM can be present and still unable to run OVMF (an emulation failure on nested or
odd hosts), so the harness never trusts ``/dev/kvm`` alone: it boots the firmware and
waits for the boot manager to speak on the serial port.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness import run
from harness.errors import ConfigError, GuestVerdict, InfrastructureError, PrerequisiteError
from harness.host import console as console_mod
from harness.host import ram
from harness.host.console import Console
from harness.host.sev import SevGuestObject, start_refusal

log = logging.getLogger(__name__)
#: Debian's OVMF (package ovmf): the known-good firmware the accelerator probe boots.
DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")
# qemu.qmp logs an ERROR when QEMU closes the socket after "quit", which is how every
# guest ends; real protocol failures still reach us as exceptions.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

QEMU = "qemu-system-x86_64"
#: How QEMU names itself in its first ``--version`` line.
VERSION_LINE = re.compile(r"QEMU emulator version (\d+\.\d+\.\d+)")
#: OVMF's boot manager prints this once DXE is up: the firmware really runs.
BDS_BANNER = re.compile(r"BdsDxe: ")
#: How a broken accelerator shows itself.
ACCEL_FAILURE = re.compile(
    r"KVM internal error|emulation failure|failed to initialize kvm|Could not access KVM"
    r"|invalid accelerator|No accelerator found"
)
#: OVMF reaches BdsDxe in ~2 s under TCG on a 2-core machine; 60 s leaves room for a
#: loaded CI host without hiding a hang for long.
PROBE_TIMEOUT = 60.0


class Accel(enum.StrEnum):
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of booting the firmware under one accelerator."""

    accel: Accel
    works: bool
    seconds: float
    detail: str


@dataclass(frozen=True)
class Qemu:
    """The emulator a launch runs: ``qemu-system-x86_64`` on PATH, or one we built.

    Attributes:
        program: a name looked up on PATH, or the path of a binary.
        data_dir: where it finds ROMs and keymaps (``-L``); None for its built-in path.
    """

    program: str = QEMU
    data_dir: Path | None = None

    def command(self) -> list[str]:
        """The start of every command line: the binary and its data directory."""
        return [self.program, *(["-L", str(self.data_dir)] if self.data_dir else [])]

    def require(self) -> None:
        """Check that the binary is there.

        Raises:
            PrerequisiteError: it is not.
        """
        if run.which(self.program) is not None:
            return
        if self.program == QEMU:
            raise PrerequisiteError(
                f"{QEMU} is not installed.", hint="apt-get install qemu-system-x86"
            )
        raise PrerequisiteError(f"{self.program} does not exist or is not executable.")

    def version(self) -> str:
        """The first line of ``--version``.

        Raises:
            PrerequisiteError: the binary is missing.
            CommandError: it does not run.
        """
        self.require()
        out = run.run([self.program, "--version"]).stdout.decode()
        return out.splitlines()[0] if out else "unknown"

    def version_number(self) -> str:
        """``7.2.22`` from the version line; ``0`` when it names none."""
        return parse_version(self.version()) or "0"


#: The default: Debian's (or the host's) qemu-system-x86_64 on PATH.
SYSTEM = Qemu()


def parse_version(line: str) -> str | None:
    """``10.0.13`` from ``QEMU emulator version 10.0.13 (harness)``; None if absent."""
    m = VERSION_LINE.search(line)
    return m.group(1) if m else None


def base_argv(
    accel: Accel,
    firmware: Path,
    memory_mib: int,
    emulator: Qemu = SYSTEM,
    confidential: str | None = None,
    memory_backend: str | None = None,
) -> list[str]:
    """q35 with *firmware* as -bios, no default devices, serial on stdio, no reboot.

    Args:
        confidential: the id of a confidential-guest-support object (``sev-guest``).
        memory_backend: the id of a memory backend that is the guest's RAM.
    """
    machine = f"q35,accel={accel}"
    if confidential:
        machine += f",confidential-guest-support={confidential}"
    if memory_backend:
        machine += f",memory-backend={memory_backend}"
    return [
        *emulator.command(),
        "-machine", machine,
        "-m", str(memory_mib),
        "-bios", str(firmware),
        "-nodefaults",
        "-display", "none",
        "-serial", "stdio",
        "-net", "none",
        "-no-reboot",
    ]  # fmt: skip


def probe_argv(accel: Accel, firmware: Path, emulator: Qemu = SYSTEM) -> list[str]:
    """The command line the probe runs: firmware only, no disks, serial on stdout."""
    return base_argv(accel, firmware, 256, emulator)


def probe(
    accel: Accel, firmware: Path, timeout: float = PROBE_TIMEOUT, emulator: Qemu = SYSTEM
) -> ProbeResult:
    """Boot *firmware* under *accel* until the boot manager prints (default 60 s).

    Raises:
        PrerequisiteError: the QEMU binary is missing.
    """
    if accel is Accel.KVM and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ProbeResult(accel, False, 0.0, "/dev/kvm is missing or not accessible")
    emulator.require()
    start = time.monotonic()
    seen = run.watch(
        probe_argv(accel, firmware, emulator),
        {"ok": BDS_BANNER, "failed": ACCEL_FAILURE},
        timeout=timeout,
    )
    took = time.monotonic() - start
    if seen.matched == "ok":
        return ProbeResult(accel, True, took, f"OVMF reached its boot manager in {took:.1f} s")
    if seen.matched == "failed" and seen.match is not None:
        line = next(
            (ln for ln in seen.output.splitlines() if seen.match.group(0) in ln),
            seen.match.group(0),
        )
        return ProbeResult(accel, False, took, line.strip())
    if seen.exited is not None:
        last = run.tail(seen.output, 1) or "no output"
        return ProbeResult(accel, False, took, f"QEMU exited with status {seen.exited}: {last}")
    return ProbeResult(accel, False, took, f"no boot manager output within {timeout:g} s")


def pick_accelerator(firmware: Path, emulator: Qemu = SYSTEM) -> tuple[Accel, list[ProbeResult]]:
    """Probe KVM, then TCG; return the first that boots *firmware* and every result.

    Raises:
        PrerequisiteError: neither accelerator boots the firmware.
    """
    results = []
    for accel in (Accel.KVM, Accel.TCG):
        result = probe(accel, firmware, emulator=emulator)
        log.debug("probe %s: %s", accel, result.detail)
        results.append(result)
        if result.works:
            return accel, results
    raise PrerequisiteError(
        f"QEMU boots {firmware} under no accelerator: "
        + "; ".join(f"{r.accel}: {r.detail}" for r in results)
    )


#: Where the probe's verdicts are kept, one per QEMU version and kernel: probing costs a
#: few seconds per accelerator.
ACCEL_CACHE_NAME = "accel.json"


def qemu_version(emulator: Qemu = SYSTEM) -> str:
    return emulator.version()


def working_accelerator(
    cache_dir: Path, firmware: Path, emulator: Qemu = SYSTEM, choice: str = "auto"
) -> Accel:
    """The accelerator that boots OVMF here with *emulator*, probed once per QEMU
    version and kernel; *choice* ``kvm`` or ``tcg`` forces one without a probe."""
    if choice != "auto":
        return Accel(choice)
    key = f"{emulator.version()} / {os.uname().release}"
    path = cache_dir / ACCEL_CACHE_NAME
    verdicts = _read_verdicts(path)
    cached = verdicts.get(key)
    if isinstance(cached, dict) and cached.get("accel") in tuple(Accel):
        return Accel(cached["accel"])
    accel, results = pick_accelerator(firmware, emulator)
    verdicts[key] = {"accel": str(accel), "details": [r.detail for r in results]}
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"verdicts": verdicts}, indent=1))
    os.replace(tmp, path)  # parallel workers: never a half-written file
    return accel


def _read_verdicts(path: Path) -> dict[str, Any]:
    """The probe verdicts kept in *path*; a missing or unreadable file holds none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    verdicts = data.get("verdicts") if isinstance(data, dict) else None
    return verdicts if isinstance(verdicts, dict) else {}


#: A guest's memory: Debian's kernel and systemd boot in it, and argon2id at cryptsetup's
#: own costs fits (just).
GUEST_MEMORY_MIB = 1024


@dataclass(frozen=True)
class LaunchConfig:
    """One guest: AmdSev OVMF as -bios, the disk on virtio, serial on stdio.

    Attributes:
        ram: the memory backend (``-object``) that is a simulated guest's RAM, a file
            the harness holds (:mod:`harness.host.ram`): the owner's secret page is
            written into it before QEMU starts, as SEV's LAUNCH_SECRET does, and once
            only (QEMU's loader would write it again on every reset).
        qmp: path of the QMP socket QEMU listens on.
        no_shutdown: keep QEMU (and guest memory) after the guest powers off.
        extra_disks: more virtio disks after the first (a hostile host's own).
        emulator: the QEMU binary that runs the guest.
        sev: the sev-guest object of a launch on SEV hardware; QEMU then starts paused
            (-S) and the owner's flow runs over QMP before ``cont``.
        fw_cfg: named strings for the guest's fw_cfg (``opt/...`` names); the host
            sees and may change them, so nothing secret.
    """

    firmware: Path
    disk: Path
    accel: Accel
    qmp: Path
    memory_mib: int = GUEST_MEMORY_MIB
    extra_disks: tuple[Path, ...] = ()
    ram: str | None = None
    no_shutdown: bool = False
    emulator: Qemu = SYSTEM
    sev: SevGuestObject | None = None
    cpu: str | None = None
    vcpus: int = 1
    disk_format: str = "raw"
    fw_cfg: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if any("," in name + value for name, value in self.fw_cfg):
            raise ConfigError("A fw_cfg name or string holds a comma, which QEMU would split on.")
        if self.sev is not None and self.ram is not None:
            raise ConfigError(
                "An SEV guest's memory is encrypted by the secure element: the harness "
                "neither writes nor reads it."
            )

    def argv(self) -> list[str]:
        sev = self.sev
        argv = [
            *base_argv(
                self.accel,
                self.firmware,
                self.memory_mib,
                self.emulator,
                sev.object_id if sev else None,
                ram.BACKEND_ID if self.ram else None,
            ),
            "-drive", f"file={self.disk},if=virtio,format={self.disk_format},snapshot=on",
            *(
                arg
                for extra in self.extra_disks
                for arg in ("-drive", f"file={extra},if=virtio,format=raw,snapshot=on")
            ),
            "-qmp", f"unix:{self.qmp},server=on,wait=off",
        ]  # fmt: skip
        if self.cpu is not None:
            argv += ["-cpu", self.cpu]
        if self.vcpus != 1:
            argv += ["-smp", str(self.vcpus)]
        for name, value in self.fw_cfg:
            argv += ["-fw_cfg", f"name={name},string={value}"]
        if sev is not None:
            argv += [*sev.argv(), "-S"]
        if self.no_shutdown:
            argv.append("-no-shutdown")
        if self.ram is not None:
            argv += ["-object", self.ram]
        return argv


#: QEMU opens its QMP socket at start-up; give a loaded host a few seconds.
QMP_CONNECT_TIMEOUT = 10.0
#: Time a guest gets to quit on QMP before it is killed.
QUIT_GRACE = 5.0
#: QEMU that refuses a sev-guest exits within a second; read its last words for this long.
REFUSAL_DRAIN = 5.0


@dataclass
class Guest:
    console: Console
    qmp: QEMUMonitorProtocol | None
    #: The reason of QEMU's first SHUTDOWN event, once one came.
    shutdown_reason: str | None = None

    def pmemsave(self, gpa: int, size: int, dest: Path) -> bytes:
        """Read guest-physical memory over QMP (QEMU writes it to *dest*)."""
        if self.qmp is None:
            raise InfrastructureError("No QMP connection to read guest memory with.")
        self.qmp.cmd("pmemsave", val=gpa, size=size, filename=str(dest))
        return dest.read_bytes()

    def wait_shutdown(self, timeout: float) -> str | None:
        """Wait for QEMU's SHUTDOWN event (the guest powered off, or reset where
        ``-no-reboot`` makes a reset a shutdown); its reason (``guest-shutdown``,
        ``guest-reset``, ...), or None if none came within *timeout* seconds."""
        if self.qmp is None:
            raise InfrastructureError("No QMP connection to wait for the guest's shutdown on.")
        deadline = time.monotonic() + timeout
        while not self.stopped():
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        return self.shutdown_reason

    def stopped(self) -> bool:
        """Whether QEMU has reported the guest's SHUTDOWN (kept for later questions)."""
        if self.shutdown_reason is None and self.qmp is not None:
            for event in self.qmp.get_events(wait=False):
                if event.get("event") == "SHUTDOWN" and self.shutdown_reason is None:
                    self.shutdown_reason = str(event.get("data", {}).get("reason", ""))
        return self.shutdown_reason is not None

    def freeze(self) -> None:
        """Stop the guest's vCPUs (QMP ``stop``) so that its memory no longer changes;
        a guest that powered off is left as it is."""
        if self.qmp is None:
            raise InfrastructureError("No QMP connection to stop the guest with.")
        if not self.stopped():
            self.qmp.cmd("stop")

    def reset(self) -> None:
        """Reset the guest as a host does (QMP ``system_reset``), whether it runs or has
        powered off, and let it run again. Guest memory is kept, as a plain SEV guest's
        is. ``-no-reboot`` would turn the reset into a shutdown, so reboots reset for the
        moment of the host's reset only.
        """
        if self.qmp is None:
            raise InfrastructureError("No QMP connection to reset the guest with.")
        self.stopped()  # record a shutdown that came before the reset
        self.qmp.cmd("set-action", reboot="reset")
        try:
            self.qmp.cmd("system_reset")
            deadline = time.monotonic() + QMP_CONNECT_TIMEOUT
            while not any(e.get("event") == "RESET" for e in self.qmp.get_events(wait=False)):
                if time.monotonic() >= deadline:
                    raise InfrastructureError("QEMU did not report the reset the host asked for.")
                time.sleep(0.05)
            status = self.qmp.cmd("query-status")
            if not (isinstance(status, dict) and status.get("running")):
                self.qmp.cmd("cont")  # a powered-off guest waits in prelaunch
        finally:
            self.qmp.cmd("set-action", reboot="shutdown")
        self.shutdown_reason = None


def _drain(con: Console) -> None:
    """Read what QEMU printed until it exits; its assertion is what we want to read, not
    a failure of the guest."""
    deadline = time.monotonic() + REFUSAL_DRAIN
    while time.monotonic() < deadline:
        try:
            if con.wait_exit(max(deadline - time.monotonic(), 0.1)):
                return
        except GuestVerdict:
            continue


@contextlib.contextmanager
def running(
    cfg: LaunchConfig,
    transcript: Path,
    secrets: tuple[bytes, ...] = (),
    allowed_errors: tuple[str, ...] = (),
    expected_failures: tuple[str, ...] = (),
) -> Iterator[Guest]:
    """QEMU with the guest's console; always stopped (QMP quit, then kill) on the way out.

    *allowed_errors* and *expected_failures* are what the scenario's path shows by design
    (:class:`harness.host.console.Console`)."""
    cfg.emulator.require()
    cfg.qmp.unlink(missing_ok=True)
    log.debug("+ %s", " ".join(cfg.argv()))
    con = console_mod.spawn(cfg.argv(), transcript, secrets, allowed_errors, expected_failures)
    qmp = None
    try:
        deadline = time.monotonic() + QMP_CONNECT_TIMEOUT
        while qmp is None and time.monotonic() < deadline and con.alive:
            if cfg.qmp.exists():
                candidate = QEMUMonitorProtocol(str(cfg.qmp))
                try:
                    candidate.connect()
                    qmp = candidate
                except (OSError, QMPError):
                    time.sleep(0.1)
            else:
                time.sleep(0.05)
        if qmp is None and cfg.sev is not None:
            _drain(con)
            raise start_refusal(con.text()) or InfrastructureError(
                "QEMU stopped before its QMP socket answered, so the SEV launch could not start.",
                hint=f"its output is in {transcript}",
            )
        guest = Guest(con, qmp)
        if cfg.no_shutdown and qmp is not None:
            con.stopped = guest.stopped  # QEMU stays: a SHUTDOWN event is the guest's end
        yield guest
    finally:
        if qmp is not None:
            with contextlib.suppress(Exception):
                qmp.cmd("quit")
            with contextlib.suppress(Exception):
                qmp.close()
        con.close(QUIT_GRACE)
        cfg.qmp.unlink(missing_ok=True)
