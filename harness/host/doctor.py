"""Host prerequisites: check them, install what is missing, start Docker, probe QEMU.

Missing packages are installed with apt when we run as root on Debian or Ubuntu;
otherwise the exact command to run is printed. A Docker engine that is installed but
not running is started (root only), with overlay2 and vfs as the fallback.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from harness import run
from harness.config import LaunchKind
from harness.errors import CommandError, HarnessError, PrerequisiteError
from harness.host import engine
from harness.host.qemu import DEBIAN_OVMF, QEMU, parse_version, pick_accelerator, qemu_version
from harness.host.sev import HostSev, platform_status, vmsa_model

log = logging.getLogger(__name__)

#: dockerd needs a few seconds to come up (longer when it first sets up vfs).
#: Debian's reference firmware: the accelerator probe and the tests boot and parse it.


@dataclass(frozen=True)
class Requirement:
    """A host tool we need, how to recognise it, and the Debian package that has it.

    Attributes:
        provides: programs looked up on PATH, or absolute paths of files; all must exist.
    """

    name: str
    package: str
    provides: tuple[str, ...]
    purpose: str

    def present(self) -> bool:
        return all(
            Path(p).exists() if p.startswith("/") else run.which(p) is not None
            for p in self.provides
        )


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("qemu", "qemu-system-x86", (QEMU,), "boots the firmware and guests"),
    Requirement("docker", "docker.io", ("dockerd", "docker"), "the builder containers"),
    Requirement("git", "git", ("git",), "applying patch series"),
    Requirement("cryptsetup", "cryptsetup-bin", ("cryptsetup",), "LUKS headers for images"),
    Requirement("sfdisk", "fdisk", ("sfdisk",), "GPT layout of guest images"),
    Requirement("mtools", "mtools", ("mcopy",), "FAT images without mounting"),
    Requirement("qemu-img", "qemu-utils", ("qemu-img",), "qcow2 guest images"),
    Requirement("dosfstools", "dosfstools", ("mkfs.fat",), "FAT filesystems"),
    Requirement("e2fsprogs", "e2fsprogs", ("mkfs.ext4",), "ext4 root filesystems"),
    Requirement("debootstrap", "debootstrap", ("debootstrap",), "base images without a registry"),
    Requirement("ovmf", "ovmf", (str(DEBIAN_OVMF),), "reference firmware for probes and tests"),
    Requirement(
        "qemu-aarch64", "qemu-system-arm", ("qemu-system-aarch64",), "boots GRUB for arm64"
    ),
    Requirement(
        "aavmf",
        "qemu-efi-aarch64",
        ("/usr/share/AAVMF/AAVMF_CODE.fd",),
        "arm64 UEFI firmware the arm64 GRUB boots on",
    ),
    Requirement(
        "chromium", "chromium", ("chromium",), "a real browser reads the HTML report in the tests"
    ),
    Requirement(
        "grub-mkimage",
        "grub-common",
        ("grub-mkimage",),
        "reference GRUB images for the tests",
    ),
    Requirement(
        "grub x86_64-efi modules",
        "grub-efi-amd64-bin",
        ("/usr/lib/grub/x86_64-efi/normal.mod",),
        "reference GRUB images for the tests",
    ),
)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report.

    Attributes:
        required: the harness needs it; an optional feature the host lacks (SEV) is
            reported but fails nothing.
    """

    name: str
    ok: bool
    detail: str
    required: bool = True

    @property
    def fails(self) -> bool:
        return self.required and not self.ok


def _can_apt() -> bool:
    return (
        os.geteuid() == 0
        and run.which("apt-get") is not None
        and Path("/etc/debian_version").exists()
    )


def apt_command(packages: list[str]) -> str:
    """The one command that installs *packages* (``sudo`` only for a user who is not root)."""
    sudo = "" if os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y " + " ".join(sorted(set(packages)))


def install_packages(reqs: list[Requirement]) -> None:
    """Install the packages behind *reqs* with apt.

    Raises:
        PrerequisiteError: not root on Debian/Ubuntu (the message gives the command), or
            apt failed.
    """
    packages = sorted({r.package for r in reqs})
    if not _can_apt():
        raise PrerequisiteError(
            "Missing host tools: " + ", ".join(r.name for r in reqs) + ".",
            hint=f"run: {apt_command(packages)}",
        )
    log.info("installing with apt: %s", " ".join(packages))
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        run.run(["apt-get", "update", "-qq"], env=env, timeout=600)
        run.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            env=env,
            timeout=1800,
        )
    except CommandError as err:
        raise PrerequisiteError(
            f"apt could not install {' '.join(packages)}.", hint=err.output_tail or None
        ) from err


def _engine_check(client: docker.DockerClient) -> Check:
    info = client.info()
    return Check(
        "docker engine",
        True,
        f"{info.get('ServerVersion', '?')}, storage driver {info.get('Driver', '?')}",
    )


def ensure_docker(fix: bool) -> Check:
    try:
        return _engine_check(engine.docker_client())
    except PrerequisiteError as err:
        if not fix:
            return Check("docker engine", False, str(err))
    try:
        return _engine_check(engine.start_docker())
    except PrerequisiteError as err:
        return Check("docker engine", False, str(err))


def ensure(fix: bool = True, probe: bool = True) -> list[Check]:
    """Check every prerequisite; with *fix*, install packages and start Docker.

    Returns:
        One Check per prerequisite, the accelerator probe last.
    """
    missing = [r for r in REQUIREMENTS if not r.present()]
    checks: list[Check] = []
    if missing and fix:
        try:
            install_packages(missing)
        except PrerequisiteError as err:
            checks.append(Check("apt", False, str(err)))
        missing = [r for r in REQUIREMENTS if not r.present()]
    for r in REQUIREMENTS:
        ok = r not in missing
        where = ", ".join(str(run.which(p) or p) for p in r.provides) if ok else "missing"
        checks.append(Check(r.name, ok, f"{where}  ({r.purpose})"))
    if missing:  # one command for all of them (./inv doctor --fix runs it as root)
        checks.append(Check("install", False, apt_command([r.package for r in missing])))
    if not any(r.name == "docker" for r in missing):
        checks.append(ensure_docker(fix))
    else:
        checks.append(Check("docker engine", False, "dockerd is not installed"))
    if probe and not any(r.name in ("qemu", "ovmf") for r in missing):
        checks.append(accelerator_check(DEBIAN_OVMF))
    return checks + sev_checks(HostSev.probe())


def sev_checks(host: HostSev) -> list[Check]:
    """What the host offers of SEV, SEV-ES and SNP, and why a mode is unavailable.

    Optional: a host without SEV runs every scenario against the simulated element.
    """
    modes = [host.support(LaunchKind.SEV), host.support(LaunchKind.SEV_ES), host.snp()]
    checks = [Check(m.mode, m.available, m.reason, required=False) for m in modes]
    if host.device_usable:
        try:
            checks.append(Check("sev platform", True, str(platform_status()), required=False))
        except HarnessError as err:
            checks.append(Check("sev platform", False, err.message, required=False))
    if host.kvm_amd:
        params = ", ".join(f"{k}={v}" for k, v in sorted(host.kvm_amd.items()))
        checks.append(Check("kvm_amd", True, params, required=False))
    model = "?"
    try:
        version = parse_version(qemu_version()) or "0"
        model, why = vmsa_model(version, os.uname().release)
    except (PrerequisiteError, CommandError) as err:
        why = f"QEMU's version is unknown: {err.message}"
    swap = "on" if host.debug_swap else "off"
    checks.append(
        Check(
            "sev-es vmsa defaults",
            True,
            f"--vmsa-model {model} ({why}); --debug-swap {swap} (kvm_amd debug_swap)",
            required=False,
        )
    )
    return checks


def accelerator_check(firmware: Path) -> Check:
    try:
        accel, results = pick_accelerator(firmware)
    except PrerequisiteError as err:
        return Check("accelerator", False, str(err))
    detail = "; ".join(f"{r.accel}: {r.detail}" for r in results)
    return Check("accelerator", True, f"{accel} ({detail})")


def render(checks: list[Check]) -> str:
    return "\n".join(f"{_status(c):8} {c.name:24} {c.detail}" for c in checks)


def _status(check: Check) -> str:
    if check.ok:
        return "ok"
    return "MISSING" if check.required else "n/a"


def require_all(fix: bool = True, probe: bool = True) -> list[Check]:
    """Like :func:`ensure`, but raise when anything is still missing.

    Raises:
        PrerequisiteError: listing every failed check.
    """
    checks = ensure(fix=fix, probe=probe)
    failed = [c for c in checks if c.fails]
    if failed:
        raise PrerequisiteError(
            "Host prerequisites are missing:\n" + render(failed),
        )
    return checks


def require(names: tuple[str, ...], *, docker_engine: bool = False) -> None:
    """Make sure the named requirements (and the Docker engine) are there, installing
    and starting what we may; what a task calls before it starts.

    Raises:
        PrerequisiteError: something is still missing; the message says how to fix it.
    """
    wanted = [r for r in REQUIREMENTS if r.name in names]
    missing = [r for r in wanted if not r.present()]
    if missing:
        install_packages(missing)
        still = [r for r in missing if not r.present()]
        if still:
            raise PrerequisiteError(
                "Still missing after apt: " + ", ".join(r.name for r in still) + "."
            )
    if docker_engine:
        check = ensure_docker(fix=True)
        if not check.ok:
            raise PrerequisiteError(f"The Docker engine is not usable: {check.detail}")
