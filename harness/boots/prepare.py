"""The guest owner's launch of one scenario: what is booted (:class:`Target`), where
(:class:`Machine`), and the launch made ready for QEMU (:func:`prepared`).

The launch is the real guest-owner flow against the simulated secure element (or SEV
hardware): the element measures the firmware it is about to load, the owner checks that
measurement against the digest in the build manifest, and only then builds the
LAUNCH_SECRET packet, which the element checks and decrypts into the secret page.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets as random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.boots import extras as owner_extras
from harness.boots import launch as owner_flow
from harness.boots.linux import LinuxSees
from harness.boots.scenarios import BOOT_TIMEOUT, Scenario, Secret
from harness.boots.verdicts import Ending, Host
from harness.components import qemu as qemu_build
from harness.config import Config, LaunchKind, QemuChoice
from harness.errors import (
    ConfigError,
    FirmwareFormatError,
    InputError,
)
from harness.files import write_private
from harness.firmware.fv import find_volumes
from harness.firmware.guidtable import MemoryBlock, parse_guid_table
from harness.guest import cryptdisk, imagemeta, proof
from harness.guest.imagemeta import DiskFormat, GuestKernel, Image, Ready
from harness.host import qemu
from harness.host import sev as host_sev
from harness.host.ram import GuestRam
from harness.host.sev import SevGuestObject
from harness.passphrase import Passphrase
from harness.sev.certs import SevCertificate
from harness.sev.chain import DEFAULT_TRUST, PlatformChain, PlatformTrust, Roots
from harness.sev.malformed import malformed_tables
from harness.sev.measure import launch_digest, seves_launch_digest
from harness.sev.policy import PolicyFlag
from harness.sev.secret import (
    DEFAULT_SECRET_AREA,
    SecretEntry,
    SecretTable,
    disk_passphrase_entry,
)
from harness.sev.session import Session
from harness.sev.vmsa import VcpuConfig, VmsaModel, cpu_type


@dataclass(frozen=True)
class Firmware:
    """The firmware under test and the launch digest the guest owner expects of it."""

    path: Path
    digest: bytes


@dataclass(frozen=True)
class Target:
    """What one boot launches: the firmware with the digest the owner expects, the
    image, and its passphrase, read once (:meth:`of`).

    Attributes:
        extras: the secrets beside the passphrase (``--entry``); None for the defaults
            (:func:`harness.boots.extras.owner_extras`).
        trust: what the owner accepts of an SEV hardware platform's chain.
    """

    firmware: Firmware
    image: Image
    passphrase: Passphrase = field(repr=False)
    extras: Sequence[SecretEntry] | None = field(default=None, repr=False)
    trust: PlatformTrust = DEFAULT_TRUST

    @classmethod
    def of(
        cls,
        firmware: Firmware,
        img: Image,
        extras: Sequence[SecretEntry] | None = None,
        trust: PlatformTrust = DEFAULT_TRUST,
    ) -> Target:
        """*img* with the passphrase its build kept (``passphrase``, 0600).

        Raises:
            InputError: the passphrase file is missing, unreadable or not private.
        """
        return cls(firmware, img, Passphrase.read(img.passphrase_file), extras, trust)

    @property
    def guest_kernel(self) -> GuestKernel:
        return self.image.guest_kernel

    @property
    def ready(self) -> Ready:
        return self.image.metadata.ready

    @property
    def disk_format(self) -> DiskFormat:
        return self.image.metadata.disk_format


@dataclass(frozen=True)
class Machine:
    """Where a boot runs: the QEMU, the accelerator that works with it, the kind of
    launch, and how long a boot may take before it is called a hang."""

    accel: qemu.Accel
    emulator: qemu.Qemu = qemu.SYSTEM
    kind: LaunchKind = LaunchKind.SIMULATED
    timeout: float = BOOT_TIMEOUT

    @classmethod
    def of(cls, cfg: Config, emulator: qemu.Qemu | None = None) -> Machine:
        """The machine a run's configuration names: its QEMU (or *emulator*, one the
        run built itself), the accelerator that works with that QEMU (probed once per
        machine, the answer kept in the cache; ``$HARNESS_ACCEL`` forces it), and the
        kind of launch.

        Raises:
            PrerequisiteError: ``--qemu built`` and the workspace has no build.
        """
        chosen = emulator or select_qemu(cfg)
        accel = qemu.working_accelerator(cfg.layout.cache, qemu.DEBIAN_OVMF, chosen, cfg.accel)
        return cls(accel, chosen, cfg.launch)


def select_qemu(cfg: Config) -> qemu.Qemu:
    """The QEMU the configuration names.

    Raises:
        PrerequisiteError: ``built`` and there is no build in the workspace.
    """
    if cfg.qemu is QemuChoice.SYSTEM:
        return qemu.SYSTEM
    return qemu_build.published(cfg.layout.published("qemu"))


@dataclass(frozen=True)
class HostDisk:
    """The hostile host's own LUKS disk, the passphrase it made it with, and its own
    kernel and initramfs in the clear (:data:`harness.guest.image.HOST_BOOT`)."""

    disk: Path
    passphrase: Passphrase
    boot: Path

    @classmethod
    def of(cls, img: Image) -> HostDisk:
        """The host's disk as ``build-image --recipe host-disk`` made it."""
        return cls(
            img.disk, Passphrase.read(img.passphrase_file), img.disk.parent / cryptdisk.HOST_BOOT
        )


def tamper(firmware: bytes) -> bytes:
    """Change one byte where OVMF does not look: the last byte of the first volume
    (the variable store's spare area, erased flash)."""
    volumes = find_volumes(firmware)
    if not volumes:
        raise FirmwareFormatError("The firmware has no volume to tamper with.")
    at = volumes[0].offset + volumes[0].length - 1
    data = bytearray(firmware)
    data[at] ^= 0x01
    return bytes(data)


@dataclass
class Launch:
    """A launch ready to start: QEMU's configuration and what the owner did.

    Attributes:
        table: the table the owner built (passphrase entry first), None if it built
            none; whether it reached the guest is the scenario's ``linux_sees``.
        extras: its entries beside the passphrase (this launch's nonce among them when
            it goes by the table).
        nonce: this launch's nonce (harness.guest.proof), given one way only:
        proof_source: that way, the table (``secret``) or fw_cfg.
        page_after: read the secret page once the guest powered off.
        ram: a simulated guest's memory, which the harness holds
            (:mod:`harness.host.ram`): searched for key material once the guest is done.
        private: this launch's 0700 directory, removed with it.
    """

    cfg: qemu.LaunchConfig
    wrong: Passphrase
    area: MemoryBlock
    notes: list[str]
    nonce: str
    proof_source: str
    hardware: HardwarePlan | None = None
    table: SecretTable | None = field(default=None, repr=False)
    extras: tuple[SecretEntry, ...] = field(default=(), repr=False)
    page_after: bool = False
    ram: GuestRam | None = None
    private: Path | None = None


@dataclass(frozen=True)
class HardwarePlan:
    """What the owner does over QMP once QEMU is up, paused, on SEV hardware."""

    owner: owner_flow.Owner
    session: Session
    table: bytes | None

    def __repr__(self) -> str:  # the table holds the passphrase
        return "HardwarePlan(<secret redacted>)"


@contextlib.contextmanager
def prepared(
    scenario: Scenario,
    target: Target,
    machine: Machine,
    workdir: Path,
    host_disk: HostDisk | None = None,
) -> Iterator[Launch]:
    """Do the guest owner's part of the launch of *target* and configure *machine*'s QEMU
    for it; *host_disk* is the host's own, for the scenarios that launch or attach it.

    The firmware copy and the decrypted secret live in a private directory of this run,
    the QMP socket in a short-named one under the system's temporary directory; both
    are removed on the way out, so parallel runs never collide.

    Raises:
        ConfigError: the scenario needs the host's disk and none was given, or our
            kernel and the image boots another.
        SecretFormatError: the owner's table does not fit the firmware's secret block.
    """
    if scenario.needs_host_disk and host_disk is None:
        raise ConfigError(f"{scenario.name} needs the host's own disk.")
    guest_kernel = target.guest_kernel
    if scenario.removes and guest_kernel is not GuestKernel.BUILT:
        raise ConfigError(
            f"{scenario.name} needs an image that boots our kernel (guest_kernel "
            f"{GuestKernel.BUILT}); this one boots the {guest_kernel} kernel, which has "
            "no efi_secret to remove an entry with.",
            hint="./inv build-image --kernel built",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".run-", dir=workdir))
    # A unix socket path must fit in 108 bytes; a deep workdir does not leave room.
    sockets = Path(tempfile.mkdtemp(prefix="harness-qmp-"))
    ram = None
    try:
        notes: list[str] = []
        fw_bytes = target.firmware.path.read_bytes()
        vcpus = _vcpus(machine.kind, machine.emulator)
        owner_digest = _owner_digest(fw_bytes, target.firmware.digest, vcpus)
        if scenario.tamper:
            fw_bytes = tamper(fw_bytes)
            notes.append("firmware tampered (one byte in the variable store's spare area)")
        table = parse_guid_table(fw_bytes)
        area = table.secret_block if table else None
        if area is None or not area.present:
            raise FirmwareFormatError(f"{target.firmware.path} has no secret block to inject into.")
        loaded = private / "OVMF.fd"
        loaded.write_bytes(fw_bytes)
        disk, disk_format = target.image.disk, target.disk_format
        if (killed := KILLED_SLOTS.get(scenario.host)) is not None:
            _require_raw(scenario, disk_format)
            slot, whose = killed
            damaged = private / disk.name
            cryptdisk.kill_key_slot(disk, damaged, slot)
            notes.append(f"the host killed LUKS key slot {slot} ({whose})")
            disk = damaged
        host_copy: tuple[tuple[str, str], ...] = ()
        if scenario.host is Host.IMPOSTOR and host_disk:
            host_copy = ((HOST_COPY_FW_CFG, _copied_marker(disk)),)
            notes.append(
                "the host launched its own disk, whose kernel prints the owner's marker and "
                "an earlier boot's proof"
            )
        if scenario.host in (Host.OWNER_DISK_MISSING, Host.IMPOSTOR) and host_disk:
            disk, disk_format = host_disk.disk, DiskFormat.RAW
            notes.append("the host launched its own LUKS disk in place of the owner's")
        extra_disks: tuple[Path, ...] = ()
        if scenario.host is Host.FOREIGN_DISK and host_disk:
            extra_disks = (host_disk.disk,)
        if scenario.host is Host.SEARCH_HIJACK and host_disk:
            disk, extra_disks = _hijack(scenario, disk, disk_format, host_disk, private, notes)
        wrong = Passphrase(("wrong-" + random.token_urlsafe(12)).encode())
        nonce = proof.fresh_nonce()
        # By the table where it reaches a Linux that lists secrets (then it is a secret
        # of this launch), else by fw_cfg, which the host sees; never both.
        by_table = guest_kernel is GuestKernel.BUILT and scenario.linux_sees is LinuxSees.TABLE
        proof_source = proof.SECRET if by_table else proof.FW_CFG
        owner_table = _owner_table(scenario, target, wrong, area.size, nonce if by_table else None)
        plain = owner_table.serialize(area.size) if owner_table else None
        plan, sev = None, None
        if machine.kind.hardware:
            plan, sev = _hardware(
                scenario, owner_digest, plain, private, machine, vcpus, notes, target.trust
            )
        else:
            # The whole of RAM is the harness's only in a simulated launch (encrypted on
            # hardware); there the page goes in once, and RAM is judged however the boot
            # ends.
            ram = GuestRam(qemu.GUEST_MEMORY_MIB)
            page = _launch(scenario, fw_bytes, owner_digest, target.passphrase, plain, notes, vcpus)
            if page is not None:
                ram.write(area.base, page)
        # pmemsave reads the page encrypted on hardware: the second opinion is simulated.
        hardware = machine.kind.hardware
        page_after = (scenario.ending is Ending.WIPES and not hardware) or (
            scenario.ending is Ending.BOOTS
            and (scenario.check_wipe or (guest_kernel is GuestKernel.BUILT and not hardware))
        )
        cfg = qemu.LaunchConfig(
            firmware=loaded,
            disk=disk,
            extra_disks=extra_disks,
            accel=machine.accel,
            qmp=sockets / "qmp.sock",
            ram=ram.backend() if ram else None,
            no_shutdown=page_after or ram is not None,
            emulator=machine.emulator,
            sev=sev,
            cpu=SEV_ES_CPU if vcpus else None,
            vcpus=vcpus.count if vcpus else 1,
            disk_format=disk_format.value,
            fw_cfg=(*(() if by_table else ((proof.FW_CFG_NAME, nonce),)), *host_copy),
        )
        yield Launch(
            cfg,
            wrong,
            area,
            notes,
            nonce,
            proof_source,
            plan,
            owner_table,
            owner_table.entries[1:] if owner_table else (),
            page_after,
            ram,
            private,
        )
    finally:
        if ram is not None:
            ram.close()
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(sockets, ignore_errors=True)


#: Where the impostor's kernel finds what it prints (images/host-disk/init); lines are
#: separated by ";" (a fw_cfg string is one line).
HOST_COPY_FW_CFG = "opt/org.harness/host-copy"


def _copied_marker(disk: Path) -> str:
    """What the host saw the owner's image print on an earlier boot: its marker with the
    token, and that boot's proof: a real MAC under the owner's key (which the harness,
    playing both sides, holds) of that boot's fw_cfg nonce, the way this launch, which
    has no table, gives its own. Only freshness tells the two apart."""
    token = imagemeta.load(disk.parent).metadata.token
    earlier = proof.mac(proof.read_key(disk.parent), proof.FW_CFG, proof.fresh_nonce())
    return (
        f"HARNESS-PROOF from={proof.FW_CFG} mac={earlier};"
        f"HARNESS-BOOTED token={token} root=/dev/mapper/root secrets=absent"
    )


#: The LUKS key slot each slot-killing host kills, and whose it is.
KILLED_SLOTS = {
    Host.KEY_SLOT: (cryptdisk.KEY_FILE_SLOT, "the key file's"),
    Host.PASSPHRASE_SLOT: (cryptdisk.PASSPHRASE_SLOT, "the passphrase's"),
}


def _require_raw(scenario: Scenario, disk_format: DiskFormat) -> None:
    """Raises: ConfigError: *scenario* damages a disk in place, which only a raw one takes."""
    if disk_format is not DiskFormat.RAW:
        raise ConfigError(f"{scenario.name} damages a raw disk; this one is {disk_format}.")


def _hijack(
    scenario: Scenario,
    disk: Path,
    disk_format: DiskFormat,
    host_disk: HostDisk,
    private: Path,
    notes: list[str],
) -> tuple[Path, tuple[Path, ...]]:
    """search-hijack's preparation: the owner's disk with its root's UUID garbled, and the
    host's filesystem carrying the original UUID.

    Raises:
        ConfigError: the disk is not raw, or its image.json does not name the root's UUID.
    """
    _require_raw(scenario, disk_format)
    metadata = imagemeta.load(disk.parent).metadata
    if metadata.root_fs_uuid is None:
        raise ConfigError(
            f"{scenario.name}: {disk.parent}/image.json does not name the root's UUID.",
            hint="rebuild the image with ./inv build-image",
        )
    damaged = private / disk.name
    cryptdisk.garble_root_uuid(disk, damaged, metadata)
    hijack = private / "host-root.img"
    cryptdisk.hijack_disk(host_disk.boot, metadata.root_fs_uuid, metadata.kernel, hijack, private)
    notes.append(
        "the host garbled the ciphertext block holding half of the root's filesystem UUID "
        "and attached an ext4 of that UUID with its own kernel"
    )
    return damaged, (hijack,)


#: The vCPU model of an SEV-ES launch (QEMU 7.2 knows it; EPYC-v4 came later); its
#: signature is in every VMSA the digest covers.
SEV_ES_CPU = "EPYC"


#: vCPUs of a simulated SEV-ES launch: the boot CPU and one AP, so both VMSA kinds count.
SIMULATED_ES_VCPUS = 2


def _vcpus(kind: LaunchKind, emulator: qemu.Qemu) -> VcpuConfig | None:
    """The vCPUs an SEV-ES launch's VMSAs describe; None for plain SEV.

    The simulated host plays QEMU with KVM_SEV_INIT (legacy) without DebugSwap; on
    hardware the doctor's reading of QEMU, the kernel and kvm_amd decides.
    """
    if not kind.es:
        return None
    if not kind.hardware:
        return VcpuConfig(
            SIMULATED_ES_VCPUS, cpu_type(SEV_ES_CPU), SEV_ES_CPU, model=VmsaModel.LEGACY
        )
    model = host_sev.vmsa_model(emulator.version_number(), os.uname().release)[0]
    return VcpuConfig(
        1,
        cpu_type(SEV_ES_CPU),
        SEV_ES_CPU,
        model=VmsaModel(model),
        debug_swap=host_sev.HostSev.probe().debug_swap,
    )


def _owner_digest(genuine: bytes, manifest_digest: bytes, vcpus: VcpuConfig | None) -> bytes:
    """The digest the owner expects: the manifest's, or (SEV-ES) the firmware's with the
    VMSAs, from the firmware file once it is shown to be the one the manifest records.

    Raises:
        InputError: the firmware file is not the build its manifest describes.
    """
    if vcpus is None:
        return manifest_digest
    if launch_digest(genuine) != manifest_digest:
        raise InputError("The firmware file is not the build its manifest records.")
    return seves_launch_digest(genuine, vcpus)


def _hardware(
    scenario: Scenario,
    expected: bytes,
    table: bytes | None,
    private: Path,
    machine: Machine,
    vcpus: VcpuConfig | None,
    notes: list[str],
    trust: PlatformTrust,
) -> tuple[HardwarePlan, SevGuestObject]:
    """The owner's part before QEMU starts on SEV hardware: the platform's chain (from
    QEMU, verified up to AMD's roots), the session, and the sev-guest object.

    Raises:
        ConfigError: a scenario the hardware cannot play (the host cannot write an
            encrypted page; the launch attacks are played on the simulated element).
        VerificationError: the chain does not reach AMD's roots.
        PrerequisiteError: QEMU reports no SEV.
    """
    if why := scenario.simulated_only:
        raise ConfigError(f"{scenario.name} runs against the simulated element only: {why}.")
    caps = host_sev.platform_capabilities(machine.emulator.command())
    pek, oca, cek = host_sev.split_cert_chain(caps.cert_chain)
    chain = PlatformChain(
        SevCertificate.parse(caps.pdh, "the platform's PDH"),
        SevCertificate.parse(pek, "the platform's PEK"),
        SevCertificate.parse(oca, "the platform's OCA"),
        SevCertificate.parse(cek, "the platform's CEK"),
    )
    policy = owner_flow.OWNER_POLICY | (int(PolicyFlag.ES) if machine.kind.es else 0)
    if vcpus is not None:
        # The host's QEMU, kernel and kvm_amd decide these; the owner records what it assumed.
        notes.append(f"SEV-ES: {vcpus.describe(snp=False)}")
    owner = owner_flow.Owner(expected, Roots.amd(), policy, trust)
    session = owner.open_session(chain)
    godh, blob = private / "godh.b64", private / "session.b64"
    write_private({godh: base64.b64encode(session.godh_cert), blob: base64.b64encode(session.blob)})
    sev = SevGuestObject(policy, godh, blob, caps.cbitpos, caps.reduced_phys_bits)
    return HardwarePlan(owner, session, table), sev


def _launch(
    scenario: Scenario,
    fw: bytes,
    expected: bytes,
    passphrase: Passphrase,
    plain: bytes | None,
    notes: list[str],
    vcpus: VcpuConfig | None = None,
) -> bytes | None:
    """The guest-owner flow against the simulated platform; the secret page it delivers
    (the caller puts it into the guest's memory), or None.

    *expected* is the digest the owner expects (SEV-ES with *vcpus*); *plain* the
    owner's table."""
    if scenario.secret is Secret.PLANTED:
        table = parse_guid_table(fw)
        size = table.secret_block.size if table and table.secret_block else None
        owner_flow.simulated_launch(fw, expected, None, scenario.attack, notes, vcpus)
        # The host writes the page itself (on SEV hardware it cannot; the page is
        # encrypted): this checks GRUB's parser, whatever produced the bytes.
        pages = dict(malformed_tables(passphrase.value, size or DEFAULT_SECRET_AREA))
        notes.append(f"a malformed secret page was planted: {scenario.planted}")
        return pages[str(scenario.planted)]
    return owner_flow.simulated_launch(fw, expected, plain, scenario.attack, notes, vcpus)


def _owner_table(
    scenario: Scenario,
    target: Target,
    wrong: Passphrase,
    area_size: int,
    nonce: str | None,
) -> SecretTable | None:
    """The table the owner injects once the launch verifies, sized for the firmware's
    secret block, with this launch's *nonce* if it goes by the table; None when the
    scenario injects nothing.

    Raises:
        SecretFormatError: the table does not fit *area_size*.
    """
    if not scenario.injects:
        return None
    injected = wrong if scenario.secret is Secret.WRONG else target.passphrase
    extras = owner_extras.owner_extras(
        target.extras,
        injected.value,
        area_size,
        remove=scenario.removes,
        nonce=nonce.encode() if nonce else None,
    )
    return SecretTable((disk_passphrase_entry(injected.value), *extras))
