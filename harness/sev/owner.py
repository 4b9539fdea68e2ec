"""The guest owner's tasks over files: digest, verify a measurement, build a secret.

These functions take paths and option values as the ``sev`` tasks receive them and
return what the task prints; the crypto is in measure, secret and packet.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.errors import ConfigError, FirmwareFormatError, InputError
from harness.files import read_input, read_private, write_private
from harness.firmware.fv import read_firmware
from harness.firmware.guidtable import parse_guid_table
from harness.passphrase import Passphrase
from harness.sev.measure import (
    LaunchMeasure,
    PlatformInfo,
    launch_digest,
    seves_launch_digest,
    verify_measurement,
)
from harness.sev.packet import TransportKeys, build_packet
from harness.sev.policy import GuestPolicy, LaunchMode, LaunchRules, parse_flags, parse_version
from harness.sev.secret import SecretEntry, SecretTable, disk_passphrase_entry
from harness.sev.snp import snp_launch_digest
from harness.sev.vmsa import DEFAULT_CPU_TYPE, CpuSignature, VcpuConfig, VmsaModel, cpu_type

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeasuredBoot:
    """What the guest is launched with, as the owner names it: firmware, measured kernel.

    Attributes:
        raw: the firmware file need not be an OVMF image (no reset-vector GUID table).
        mode: SEV, SEV-ES or SNP; the digest of the last two covers the vCPUs.
        vcpus: the vCPUs, for SEV-ES and SNP.
    """

    firmware: str
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    raw: bool = False
    mode: LaunchMode = LaunchMode.SEV
    vcpus: VcpuConfig = field(default_factory=VcpuConfig)

    def digest(self) -> bytes:
        """The expected launch digest for :attr:`mode` (SNP: the 48-byte measurement).

        Raises:
            FirmwareFormatError: not an OVMF image (without *raw*), no hash table
                block for a measured kernel, or (SEV-ES, SNP) no reset block for the
                APs or no SNP metadata.
            ConfigError: the legacy VMSA model for SNP.
        """
        image = read_firmware(Path(self.firmware))
        if not self.raw and parse_guid_table(image) is None:
            raise FirmwareFormatError(
                f"{self.firmware} is not an OVMF image: it has no reset-vector GUID table.",
                hint="--raw digests the file as it is, if that is what you mean",
            )
        kernel = read_input(self.kernel, "kernel") if self.kernel else None
        initrd = read_input(self.initrd, "initrd") if self.initrd else None
        match self.mode:
            case LaunchMode.SEV:
                return launch_digest(image, kernel, initrd, self.append)
            case LaunchMode.SEV_ES:
                return seves_launch_digest(image, self.vcpus, kernel, initrd, self.append)
            case LaunchMode.SNP:
                return snp_launch_digest(image, self.vcpus, kernel, initrd, self.append)

    def describe(self) -> str:
        """What the digest was computed for, beyond the files ("" for plain SEV)."""
        if not self.mode.has_vmsa:
            return ""
        label = {LaunchMode.SEV_ES: "SEV-ES", LaunchMode.SNP: "SNP"}[self.mode]
        return f"{label}: {self.vcpus.describe(snp=self.mode is LaunchMode.SNP)}"


def vcpu_config(
    mode: LaunchMode,
    count: int = 1,
    type_name: str = "",
    signature: str = "",
    family: str = "",
    model: str = "",
    stepping: str = "",
    vmsa_model: str = "",
    debug_swap: bool = False,
    no_debug_swap: bool = False,
) -> VcpuConfig:
    """The vCPUs as the --vcpu* options name them.

    The CPU is a QEMU model (--vcpu-type, default EPYC-v4), a raw CPUID signature
    (--vcpu-sig) or --vcpu-family/--vcpu-model/--vcpu-stepping, exactly one of them.
    The VMSA model defaults to legacy (KVM_SEV_INIT) for SEV-ES and to init2 for SNP,
    which KVM always sets up with KVM_SEV_INIT2. DebugSwap is off unless
    --debug-swap; --no-debug-swap states the default.

    Raises:
        ConfigError: conflicting or incomplete CPU options, bad numbers, an unknown
            type or VMSA model, --debug-swap with --no-debug-swap.
    """
    if debug_swap and no_debug_swap:
        raise ConfigError("--debug-swap and --no-debug-swap contradict each other.")
    fms = {"--vcpu-family": family, "--vcpu-model": model, "--vcpu-stepping": stepping}
    given = [
        name
        for name, value in (
            ("--vcpu-type", type_name),
            ("--vcpu-sig", signature),
            ("--vcpu-family/--vcpu-model/--vcpu-stepping", any(fms.values())),
        )
        if value
    ]
    if len(given) > 1:
        raise ConfigError(f"Name the vCPU one way: {' and '.join(given)} were both given.")
    name: str | None = type_name or None
    if signature:
        sig, name = CpuSignature.parse(parse_int(signature, "vCPU signature")), None
    elif any(fms.values()):
        if missing := [flag for flag, value in fms.items() if not value]:
            raise ConfigError(
                f"A vCPU given by family, model and stepping needs {', '.join(missing)} too."
            )
        sig, name = (
            CpuSignature(*(parse_int(v, k[2:].replace("-", " ")) for k, v in fms.items())),
            None,
        )
    else:
        name = name or DEFAULT_CPU_TYPE
        sig = cpu_type(name)
    try:
        chosen = VmsaModel(vmsa_model.lower()) if vmsa_model else None
    except ValueError as err:
        raise ConfigError(f"--vmsa-model {vmsa_model!r} is not legacy or init2.") from err
    if chosen is None:
        chosen = VmsaModel.INIT2 if mode is LaunchMode.SNP else VmsaModel.LEGACY
    return VcpuConfig(count, sig, name, model=chosen, debug_swap=debug_swap)


def parse_int(text: str, what: str) -> int:
    """Accept decimal or 0x-prefixed hex, as sevctl and QMP users write them."""
    try:
        return int(text, 0)
    except ValueError as err:
        raise ConfigError(f"The {what} {text!r} is not a number.") from err


def platform_info(api_major: str, api_minor: str, build: str, policy: str) -> PlatformInfo:
    """The platform's report as typed on the command line (decimal or 0x..).

    Raises:
        ConfigError: a field is missing or not a number.
    """
    given = {"api-major": api_major, "api-minor": api_minor, "build": build, "policy": policy}
    if missing := [f"--{name}" for name, value in given.items() if not value]:
        raise ConfigError(
            f"The launch is verified against the platform's report: {', '.join(missing)} "
            "missing (or --no-verify to skip the check)."
        )
    return PlatformInfo(
        parse_int(api_major, "API major version"),
        parse_int(api_minor, "API minor version"),
        parse_int(build, "build id"),
        parse_int(policy, "policy"),
    )


def launch_rules(allow_debug: bool, min_api: str, min_build: str, require: str = "") -> LaunchRules:
    """--allow-debug, --min-api MAJOR.MINOR, --min-build N and --require FLAGS as rules."""
    return LaunchRules(
        allow_debug=allow_debug,
        min_api=parse_version(min_api) if min_api else (0, 0),
        min_build=parse_int(min_build, "minimum build") if min_build else 0,
        required=parse_flags(require),
    )


def policy_text(policy: int) -> str:
    """The policy word with its bits by name, as the tasks print it."""
    return str(GuestPolicy.parse(policy))


def manifest_digest(path: str | Path) -> bytes:
    """The launch digest ``./inv build-ovmf`` recorded in a manifest.json.

    Raises:
        InputError: missing, not JSON, or without output.sev_launch_digest.
    """
    text = read_input(path, "build manifest")
    try:
        return bytes.fromhex(json.loads(text)["output"]["sev_launch_digest"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} has no valid output.sev_launch_digest.") from err


@dataclass(frozen=True)
class Expected:
    """What the owner verifies of a launch before it hands out anything.

    Attributes:
        boot: what the digest was computed for (None: a build manifest's digest).
    """

    digest: bytes
    platform: PlatformInfo
    rules: LaunchRules
    boot: MeasuredBoot | None = None

    @property
    def mode(self) -> LaunchMode:
        return LaunchMode.SEV if self.boot is None else self.boot.mode

    def verify(self, tik: bytes, launch_measure: str) -> None:
        """The rules, then the measurement (the same check for sev.verify and sev.secret).

        Raises:
            ConfigError: the policy sets a reserved bit.
            VerificationError: the rules refuse the launch, or the measurement does not
                match.
        """
        measure = LaunchMeasure.from_base64(launch_measure)
        verify_measurement(tik, self.platform, self.digest, measure, self.rules)


def expected_launch(
    boot: MeasuredBoot, manifest: str | None, platform: PlatformInfo, rules: LaunchRules
) -> Expected:
    """The expected launch: the digest of *boot*, or the one a build *manifest* records.

    The policy decides the mode: SEV-ES when it sets ES (bit 2), whose digest covers
    *boot*'s vCPUs, else SEV.

    Raises:
        ConfigError: neither a firmware nor a manifest, a malformed policy, or a
            measured kernel or SEV-ES policy with a manifest (which records the plain
            SEV digest of the firmware alone).
    """
    mode = LaunchMode.from_policy(platform.policy)
    if manifest:
        if boot.kernel or boot.initrd or boot.append is not None:
            raise ConfigError(
                "A build manifest records the firmware's digest alone; a measured kernel "
                "needs --firmware."
            )
        if mode is not LaunchMode.SEV:
            raise ConfigError(
                f"The policy {platform.policy:#x} asks for SEV-ES, whose digest covers the "
                "vCPUs; a build manifest records the plain SEV digest, so give --firmware."
            )
        return Expected(manifest_digest(manifest), platform, rules)
    if not boot.firmware:
        raise ConfigError(
            "The launch measurement is checked first: give --firmware or --manifest "
            "(or --no-verify to skip the check)."
        )
    boot = replace(boot, mode=mode)
    return Expected(boot.digest(), platform, rules, boot)


def verify(expected: Expected, launch_measure: str, tik: str) -> bytes:
    """Check a launch against *expected*; return the digest on success.

    Raises:
        VerificationError: refused or not matching.
    """
    expected.verify(read_private(Path(tik), "TIK"), launch_measure)
    return expected.digest


def load_keys(tek: str | None, tik: str | None, tiktek: str | None) -> TransportKeys:
    """Read the transport keys from --tek/--tik or from sev-tool's tmp_tk.bin."""
    if tiktek and (tek or tik):
        raise ConfigError("Give either --tiktek or --tek with --tik, not both.")
    if tiktek:
        return TransportKeys.from_tiktek(read_private(Path(tiktek), "TIK/TEK"))
    if not (tek and tik):
        raise ConfigError("The transport keys are needed: --tek and --tik, or --tiktek.")
    return TransportKeys(tek=read_private(Path(tek), "TEK"), tik=read_private(Path(tik), "TIK"))


def parse_entry(spec: str) -> SecretEntry:
    """Parse ``GUID:FILE`` into an entry holding the file's bytes."""
    guid_text, sep, path = spec.partition(":")
    if not sep or not path:
        raise ConfigError(f"--entry {spec!r} is not of the form GUID:FILE.")
    try:
        guid = uuid.UUID(guid_text)
    except ValueError as err:
        raise ConfigError(f"--entry {spec!r}: {guid_text!r} is not a GUID.") from err
    if guid.int == 0:
        raise ConfigError(f"--entry {spec!r}: the all-zero GUID marks a deleted entry.")
    return SecretEntry(guid, read_private(Path(path), f"secret entry {guid}"))


@dataclass(frozen=True)
class SecretOutput:
    header_path: Path
    secret_path: Path
    table_size: int
    entries: int


def build_secret(
    keys: TransportKeys,
    launch_measure: str,
    passphrase_file: str,
    extra_entries: Sequence[str],
    header_out: str,
    secret_out: str,
    firmware: str | None = None,
    as_base64: bool = False,
    expected: Expected | None = None,
) -> SecretOutput:
    """Verify the launch, then build, encrypt and MAC the secret table; write header and
    payload 0600. Nothing is written when the launch does not verify.

    Args:
        expected: the launch to verify first; None (``--no-verify``) skips the check
            with a warning.

    Raises:
        VerificationError: the launch is refused or its measurement does not match.
        SecretFormatError: the table does not fit the firmware's secret block.
        FirmwareFormatError: --firmware reserves no secret block at all.
    """
    measure = LaunchMeasure.from_base64(launch_measure)
    if expected is not None:
        expected.verify(keys.tik, launch_measure)
    entries = [disk_passphrase_entry(Passphrase.read(passphrase_file).value)]
    entries += [parse_entry(spec) for spec in extra_entries]
    area = None
    if firmware:
        table = parse_guid_table(read_firmware(Path(firmware)))
        block = table.secret_block if table else None
        if block is None or not block.present:
            raise InputError(
                f"{firmware} reserves no SEV secret block, so it cannot take a secret.",
                hint="build OvmfPkg/AmdSev/AmdSevX64.dsc",
            )
        area = block.size
    plain = SecretTable(tuple(entries)).serialize(area_size=area)
    packet = build_packet(plain, keys, measure.measurement)
    header, payload = packet.header, packet.payload
    if as_base64:
        header, payload = base64.b64encode(header), base64.b64encode(payload)
    out = SecretOutput(Path(header_out), Path(secret_out), len(plain), len(entries))
    if out.header_path.resolve() == out.secret_path.resolve():
        raise ConfigError("--header-out and --secret-out name the same file.")
    if expected is None:
        log.warning(
            "warning: --no-verify: the launch measurement was not checked, so this secret "
            "goes to whatever the host launched"
        )
    write_private({out.header_path: header, out.secret_path: payload})
    return out


def write_keys(path: str) -> None:
    """Write fresh transport keys in sev-tool's tmp_tk.bin layout (TEK, TIK), 0600."""
    keys = TransportKeys.generate()
    write_private({Path(path): keys.tek + keys.tik})
