"""The host's side of a real SEV launch: what the host offers, the sev-guest object, QMP.

On a Linux/KVM host SEV needs an AMD EPYC CPU with the feature on (``sev``,
``sev_es``, ``sev_snp`` in /proc/cpuinfo), kvm_amd loaded with its ``sev`` /
``sev_es`` / ``sev_snp`` parameters on, and ``/dev/sev`` (the ccp driver's PSP
device) readable and writable by the user who starts QEMU. QEMU then takes a
``sev-guest`` object and, paused with ``-S``, answers the launch commands on QMP:

* ``query-sev-capabilities``: the platform's PDH and certificate chain, cbitpos and
  reduced-phys-bits;
* ``query-sev``: state, API version, build and policy of this guest's launch;
* ``query-sev-launch-measure``: base64 of MEASUREMENT || MNONCE;
* ``sev-inject-launch-secret``: the owner's packet, at a guest-physical address;
* ``cont``: start the guest.

This module knows the host and the wire; what the owner decides is in ``harness.sev``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness import run
from harness.config import LaunchKind
from harness.errors import InfrastructureError, PrerequisiteError, VerificationError

#: The cpuinfo flag and kvm_amd parameter behind each hardware mode.
FEATURES = {
    LaunchKind.SEV: ("sev", "sev"),
    LaunchKind.SEV_ES: ("sev_es", "sev_es"),
}
SNP_FEATURE = ("sev_snp", "sev_snp")
SEV_DEVICE = Path("/dev/sev")
KVM_AMD_PARAMETERS = Path("/sys/module/kvm_amd/parameters")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class ModeSupport:
    """Whether the host can launch one mode, and if not, the first reason why."""

    mode: str
    available: bool
    reason: str


@dataclass(frozen=True)
class HostSev:
    """What the host shows of SEV: CPU flags, kvm_amd's parameters, the PSP device.

    Attributes:
        cpu_flags: the SEV flags of /proc/cpuinfo that are set.
        kvm_amd: kvm_amd's parameters (``sev``, ``sev_es``, ``sev_snp``,
            ``debug_swap``) as the module shows them (Y/N or 1/0); empty when it is
            not loaded.
        device: the PSP device; None when it does not exist.
        device_usable: this user may open it read-write.
    """

    cpu_flags: frozenset[str]
    kvm_amd: Mapping[str, str]
    device: Path | None
    device_usable: bool

    @classmethod
    def probe(
        cls,
        cpuinfo: Path = CPUINFO,
        parameters: Path = KVM_AMD_PARAMETERS,
        device: Path = SEV_DEVICE,
    ) -> HostSev:
        """Read the host's state (the paths are parameters so tests can point elsewhere)."""
        flags: set[str] = set()
        try:
            for line in cpuinfo.read_text(errors="replace").splitlines():
                if line.startswith("flags"):
                    flags.update(line.partition(":")[2].split())
                    break
        except OSError:
            pass
        params: dict[str, str] = {}
        if parameters.is_dir():
            for name in ("sev", "sev_es", "sev_snp", "debug_swap"):
                try:
                    params[name] = (parameters / name).read_text().strip()
                except OSError:
                    continue
        present = device.exists()
        return cls(
            frozenset(flags & {"sev", "sev_es", "sev_snp"}),
            params,
            device if present else None,
            present and os.access(device, os.R_OK | os.W_OK),
        )

    def _why_not(self, flag: str, parameter: str) -> str | None:
        if flag not in self.cpu_flags:
            return f"this CPU does not offer {flag.upper().replace('_', '-')} (no '{flag}' flag)"
        if not self.kvm_amd:
            return "kvm_amd is not loaded"
        if not _on(self.kvm_amd.get(parameter, "N")):
            return f"kvm_amd's {parameter} parameter is off (boot with kvm_amd.{parameter}=1)"
        if self.device is None:
            return f"{SEV_DEVICE} does not exist (the ccp driver did not find the PSP)"
        if not self.device_usable:
            return f"{SEV_DEVICE} is not readable and writable by this user"
        return None

    def support(self, mode: LaunchKind) -> ModeSupport:
        """Whether *mode* can run here; the simulated mode always can."""
        if not mode.hardware:
            return ModeSupport(mode.value, True, "no hardware needed")
        why = self._why_not(*FEATURES[mode])
        if why is None and mode is LaunchKind.SEV_ES:
            why = self._why_not(*FEATURES[LaunchKind.SEV])
        return ModeSupport(mode.value, why is None, why or "available")

    def snp(self) -> ModeSupport:
        why = self._why_not(*SNP_FEATURE)
        return ModeSupport("sev-snp", why is None, why or "available")

    @property
    def debug_swap(self) -> bool:
        """kvm_amd's debug_swap: KVM then sets DebugSwap in every SEV-ES VMSA."""
        return _on(self.kvm_amd.get("debug_swap", "N"))

    def require(self, mode: LaunchKind) -> None:
        """Raises: PrerequisiteError: *mode* cannot run here (one sentence why)."""
        found = self.support(mode)
        if not found.available:
            raise PrerequisiteError(
                f"This host cannot launch an {mode.value.upper()} guest: {found.reason}.",
                hint="./inv doctor shows what the host offers; --launch simulated runs "
                "the owner flow against the simulated secure element",
            )


def _on(value: str) -> bool:
    return value.strip().upper() in ("Y", "1")


@dataclass(frozen=True)
class SevGuestObject:
    """QEMU's ``sev-guest`` object for one launch.

    Attributes:
        dh_cert_file: the owner's GODH certificate, base64 (``sev.session`` writes it).
        session_file: the LAUNCH_START session, base64.
        cbitpos: the C-bit's position in a page-table entry (CPUID 0x8000001F EBX[5:0]).
        reduced_phys_bits: physical address bits lost to encryption (EBX[11:6]).
    """

    policy: int
    dh_cert_file: Path
    session_file: Path
    cbitpos: int
    reduced_phys_bits: int
    object_id: str = "sev0"

    def argv(self) -> list[str]:
        """``-object sev-guest,...`` (the machine names it with confidential-guest-support)."""
        return [
            "-object",
            f"sev-guest,id={self.object_id},policy={self.policy:#x},cbitpos={self.cbitpos},"
            f"reduced-phys-bits={self.reduced_phys_bits},dh-cert-file={self.dh_cert_file},"
            f"session-file={self.session_file}",
        ]


#: QEMU's refusals of a sev-guest at start-up, and what they mean for the user.
START_REFUSALS = (
    ("Failed to open /dev/sev", "QEMU could not open /dev/sev"),
    ("cbitpos check failed", "the host's CPU reports no C-bit position (no SEV)"),
    ("SEV is not enabled in KVM", "KVM has SEV turned off"),
    ("cgs->ready", "QEMU's accelerator cannot run a confidential guest (SEV needs KVM)"),
    ("qemu_machine_creation_done", "QEMU's accelerator cannot run a confidential guest"),
    ("sev_kvm_init", "KVM refused to set up SEV"),
    ("failed to initialize kvm", "KVM refused to start the guest"),
)


def start_refusal(output: str) -> PrerequisiteError | None:
    """QEMU's words for a refused sev-guest, as the error the user sees; None if absent."""
    for needle, meaning in START_REFUSALS:
        if needle in output:
            line = next(ln.strip() for ln in output.splitlines() if needle in ln)
            return PrerequisiteError(
                f"QEMU refused to launch the SEV guest: {meaning} ({line}).",
                hint="./inv doctor shows what the host offers",
            )
    return None


class Monitor(Protocol):
    """The QMP connection (qemu.qmp's QEMUMonitorProtocol has this method)."""

    def cmd_raw(self, name: str, args: dict[str, object] | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SevCapabilities:
    """``query-sev-capabilities``: the platform's certificates and address bits."""

    pdh: bytes
    cert_chain: bytes
    cbitpos: int
    reduced_phys_bits: int


class SevState(enum.StrEnum):
    """QAPI ``SevState``."""

    UNINIT = "uninit"
    LAUNCH_UPDATE = "launch-update"
    LAUNCH_SECRET = "launch-secret"
    RUNNING = "running"
    SEND_UPDATE = "send-update"
    RECEIVE_UPDATE = "receive-update"


@dataclass(frozen=True)
class SevInfo:
    """``query-sev``: the launch as the platform reports it."""

    enabled: bool
    api_major: int
    api_minor: int
    build_id: int
    policy: int
    state: str
    handle: int


#: The commands whose refusal can mean that the host has no SEV (asked before a launch).
PROBES = ("query-sev-capabilities", "query-sev")
#: QMP error descriptions that mean the host has no usable SEV (not a guest verdict).
NO_SEV = ("KVM not enabled", "SEV is not enabled in KVM", "SEV feature is not available")


class SevMonitor:
    """The SEV launch commands over one QMP connection, replies checked and typed.

    Every QMP error reply becomes a harness error: no SEV on the host is a
    PrerequisiteError (exit 3); a refused injection is a VerificationError (the secret
    did not reach the guest); anything else is an InfrastructureError.
    """

    def __init__(self, qmp: Monitor) -> None:
        self._qmp = qmp

    def _call(self, name: str, args: dict[str, object] | None = None) -> Any:
        reply = self._qmp.cmd_raw(name, args)
        if "error" in reply:
            desc = str(reply["error"].get("desc", "unknown error"))
            if name == "sev-inject-launch-secret":  # the platform's verdict, whatever its words
                raise VerificationError(f"QEMU refused the launch secret: {desc}.")
            if name in PROBES and any(n in desc for n in NO_SEV):
                raise PrerequisiteError(f"QEMU has no SEV on this host: {desc}.")
            raise InfrastructureError(f"QMP {name} failed: {desc}.")
        if "return" not in reply:
            raise InfrastructureError(f"QMP {name} gave no return value.")
        return reply["return"]

    def capabilities(self) -> SevCapabilities:
        ret = self._call("query-sev-capabilities")
        return SevCapabilities(
            _b64(ret, "pdh"),
            _b64(ret, "cert-chain"),
            _int(ret, "cbitpos"),
            _int(ret, "reduced-phys-bits"),
        )

    def info(self) -> SevInfo:
        ret = self._call("query-sev")
        return SevInfo(
            enabled=bool(ret.get("enabled")),
            api_major=_int(ret, "api-major"),
            api_minor=_int(ret, "api-minor"),
            build_id=_int(ret, "build-id"),
            policy=_int(ret, "policy"),
            state=str(ret.get("state", "")),
            handle=_int(ret, "handle"),
        )

    def launch_measure(self) -> str:
        """The base64 MEASUREMENT || MNONCE, as ``sev.verify`` takes it."""
        ret = self._call("query-sev-launch-measure")
        data = ret.get("data") if isinstance(ret, dict) else None
        if not isinstance(data, str):
            raise InfrastructureError("QMP query-sev-launch-measure gave no data.")
        return data

    def inject(self, header: bytes, payload: bytes, gpa: int) -> None:
        """``sev-inject-launch-secret`` at *gpa* (always given: the owner read it from the
        firmware it verified, rather than trusting QEMU to find the secret block)."""
        self._call(
            "sev-inject-launch-secret",
            {
                "packet-header": base64.b64encode(header).decode(),
                "secret": base64.b64encode(payload).decode(),
                "gpa": gpa,
            },
        )

    def cont(self) -> None:
        self._call("cont")


def _int(ret: Mapping[str, Any], key: str) -> int:
    value = ret.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InfrastructureError(f"QMP reply without an integer {key!r}.")
    return value


def _b64(ret: Mapping[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(str(ret[key]), validate=True)
    except (KeyError, binascii.Error, ValueError) as err:
        raise InfrastructureError(f"QMP reply without valid base64 {key!r}.") from err


#: KVM_SEV_INIT2 arrived in Linux 6.10; QEMU uses it from its 9.1 machine types on
#: (unless ``legacy-vm-type=on``). With it KVM sets MXCSR and the x87 FCW in each VMSA.
INIT2_KERNEL = (6, 10)
INIT2_QEMU = (9, 1)


def _version(text: str) -> tuple[int, ...]:
    """``(6, 1, 0)`` from ``6.1.0-28-amd64``: the leading dotted numbers."""
    m = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in m.group(0).split(".")) if m else ()


def vmsa_model(qemu_version: str, kernel_release: str) -> tuple[str, str]:
    """The VMSA model an SEV-ES launch on this host gets (``legacy`` or ``init2``), and why.

    Args:
        qemu_version: ``9.2.0`` as QEMU prints it.
        kernel_release: ``6.12.5-amd64`` as ``uname -r`` prints it.
    """
    q, k = _version(qemu_version), _version(kernel_release)
    if q >= INIT2_QEMU and k >= INIT2_KERNEL:
        return "init2", f"QEMU {qemu_version} and Linux {kernel_release} use KVM_SEV_INIT2"
    older = f"QEMU {qemu_version} < 9.1" if q < INIT2_QEMU else f"Linux {kernel_release} < 6.10"
    return "legacy", f"{older}: KVM_SEV_INIT (MXCSR and FCW zero)"


#: A paused QEMU answers query-sev-capabilities within a second; a loaded host gets more.
CAPABILITIES_TIMEOUT = 30.0
#: What QEMU reads on ``-qmp stdio`` to report the platform's certificates and quit.
CAPABILITIES_SCRIPT = b"".join(
    json.dumps({"execute": name}).encode() + b"\n"
    for name in ("qmp_capabilities", "query-sev-capabilities", "quit")
)


@dataclass(frozen=True)
class _Answer:
    """A reply QEMU already gave, for SevMonitor to check and type."""

    reply: dict[str, Any]

    def cmd_raw(self, name: str, args: dict[str, object] | None = None) -> dict[str, Any]:
        return self.reply


def platform_capabilities(command: list[str]) -> SevCapabilities:
    """Ask QEMU (*command*: the emulator and its data dir) for the platform's PDH and
    certificate chain, from a paused KVM machine without a guest.

    Raises:
        PrerequisiteError: QEMU reports no SEV on this host.
        InfrastructureError: QEMU did not answer.
    """
    argv = [
        *command,
        "-machine", "q35,accel=kvm", "-S", "-nodefaults", "-display", "none",
        "-qmp", "stdio",
    ]  # fmt: skip
    done = run.run(argv, input=CAPABILITIES_SCRIPT, timeout=CAPABILITIES_TIMEOUT, check=False)
    text = done.stdout.decode(errors="replace")
    answers = []
    for line in text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and ("return" in message or "error" in message):
            answers.append(message)
    if len(answers) < 2:
        raise start_refusal(text) or InfrastructureError(
            "QEMU did not answer query-sev-capabilities.", hint=run.tail(text) or None
        )
    return SevMonitor(_Answer(answers[1])).capabilities()


#: PDH_CERT_EXPORT's CERT_CHAIN: PEK, OCA and CEK, 0x824 bytes each.
CERT_SIZE = 0x824


def split_cert_chain(chain: bytes) -> tuple[bytes, bytes, bytes]:
    """PEK, OCA, CEK from query-sev-capabilities' cert-chain.

    Raises:
        InfrastructureError: not three certificates.
    """
    if len(chain) != 3 * CERT_SIZE:
        raise InfrastructureError(
            f"QEMU's cert-chain is {len(chain)} bytes; PEK, OCA and CEK make {3 * CERT_SIZE}."
        )
    return chain[:CERT_SIZE], chain[CERT_SIZE : 2 * CERT_SIZE], chain[2 * CERT_SIZE :]


#: linux/psp-sev.h: ``_IOWR('S', 0x0, struct sev_issue_cmd)``, the PSP driver's one ioctl.
SEV_ISSUE_CMD = 0xC0105300
#: ``enum sev_cmd``: SEV_PLATFORM_STATUS.
SEV_PLATFORM_STATUS = 1
#: ``struct sev_issue_cmd { __u32 cmd; __u64 data; __u32 error; } __packed``
ISSUE_CMD = struct.Struct("<IQI")
#: ``struct sev_user_data_status { __u8 api_major, api_minor, state; __u32 flags;
#: __u8 build; __u32 guest_count; } __packed``
PLATFORM_STATUS = struct.Struct("<BBBIBI")


@dataclass(frozen=True)
class PlatformStatus:
    """SEV_PLATFORM_STATUS: the firmware's API version and build, as the PSP reports."""

    api_major: int
    api_minor: int
    state: int
    flags: int
    build: int
    guest_count: int

    @classmethod
    def parse(cls, data: bytes) -> PlatformStatus:
        if len(data) != PLATFORM_STATUS.size:
            raise InfrastructureError(
                f"SEV_PLATFORM_STATUS returned {len(data)} bytes, not {PLATFORM_STATUS.size}."
            )
        return cls(*PLATFORM_STATUS.unpack(data))

    def __str__(self) -> str:
        return f"SEV API {self.api_major}.{self.api_minor}, build {self.build}"


def platform_status(device: Path = SEV_DEVICE) -> PlatformStatus:
    """Ask the PSP driver for the platform's status (needs /dev/sev read-write).

    Raises:
        PrerequisiteError: the device cannot be opened.
        InfrastructureError: the PSP refused the command.
    """
    import ctypes
    import fcntl

    buffer = ctypes.create_string_buffer(PLATFORM_STATUS.size)
    request = bytearray(ISSUE_CMD.pack(SEV_PLATFORM_STATUS, ctypes.addressof(buffer), 0))
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as err:
        raise PrerequisiteError(f"{device} cannot be opened: {err.strerror}.") from err
    try:
        fcntl.ioctl(fd, SEV_ISSUE_CMD, request)
    except OSError as err:
        code = ISSUE_CMD.unpack(bytes(request))[2]
        raise InfrastructureError(
            f"The PSP refused SEV_PLATFORM_STATUS: {err.strerror} (firmware error {code:#x})."
        ) from err
    finally:
        os.close(fd)
    return PlatformStatus.parse(buffer.raw)
