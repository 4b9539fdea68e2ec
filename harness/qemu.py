"""QEMU command lines and the accelerator probe.

KVM can be present and still unable to run OVMF (an emulation failure on nested or
odd hosts), so the harness never trusts ``/dev/kvm`` alone: it boots the firmware and
waits for the boot manager to speak on the serial port.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness import run
from harness.errors import PrerequisiteError

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
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


def probe_argv(accel: Accel, firmware: Path) -> list[str]:
    """The command line the probe runs: firmware only, no disks, serial on stdout."""
    return [
        QEMU,
        "-machine",
        f"q35,accel={accel}",
        "-m",
        "256",
        "-bios",
        str(firmware),
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-net",
        "none",
        "-no-reboot",
    ]


def probe(accel: Accel, firmware: Path, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """Boot *firmware* under *accel* until the boot manager prints (default 60 s).

    Raises:
        PrerequisiteError: qemu-system-x86_64 is not installed.
    """
    if accel is Accel.KVM and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ProbeResult(accel, False, 0.0, "/dev/kvm is missing or not accessible")
    if run.which(QEMU) is None:
        raise PrerequisiteError(f"{QEMU} is not installed.", hint="apt-get install qemu-system-x86")
    start = time.monotonic()
    seen = run.watch(
        probe_argv(accel, firmware),
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


def pick_accelerator(firmware: Path) -> tuple[Accel, list[ProbeResult]]:
    """Probe KVM, then TCG; return the first that boots *firmware* and every result.

    Raises:
        PrerequisiteError: neither accelerator boots the firmware.
    """
    results = []
    for accel in (Accel.KVM, Accel.TCG):
        result = probe(accel, firmware)
        log.debug("probe %s: %s", accel, result.detail)
        results.append(result)
        if result.works:
            return accel, results
    raise PrerequisiteError(
        f"QEMU boots {firmware} under no accelerator: "
        + "; ".join(f"{r.accel}: {r.detail}" for r in results)
    )
