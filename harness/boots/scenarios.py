"""The boot scenarios, as data, and the simulated launch that runs them.

Each scenario says what secret the guest owner tries to inject, what (if anything) is
typed at GRUB's prompt, and what must happen. The launch is the real guest-owner flow
against the simulated secure element: the element measures the firmware it is about to
load, the owner checks that measurement against the digest in the build manifest, and
only then builds the LAUNCH_SECRET packet, which the element checks and decrypts into
the secret page (QEMU's generic loader, before the CPU starts).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import logging
import os
import secrets as random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.boots import extras as owner_extras
from harness.boots import launch as owner_flow
from harness.boots import linux, phases, verdicts
from harness.boots.launch import Attack
from harness.boots.linux import LinuxSees
from harness.boots.result import BOOT_VERDICTS as BOOT_VERDICTS
from harness.boots.result import RESULT_SCHEMA as RESULT_SCHEMA
from harness.boots.result import Result as Result
from harness.boots.verdicts import Ending, Host
from harness.config import LaunchKind
from harness.errors import (
    ConfigError,
    FirmwareFormatError,
    GuestVerdict,
    InfrastructureError,
    InputError,
    VerificationError,
)
from harness.files import write_private
from harness.firmware.fv import find_volumes
from harness.firmware.guidtable import MemoryBlock, parse_guid_table
from harness.guest import image, proof
from harness.guest.image import DiskFormat, GuestKernel, Ready
from harness.guest.report import REMOVE_SECRET_GUID
from harness.host import qemu
from harness.host import sev as host_sev
from harness.host.console import Console
from harness.host.ram import GuestRam
from harness.host.sev import SevGuestObject, SevMonitor
from harness.passphrase import Passphrase
from harness.sev.certs import SevCertificate
from harness.sev.chain import DEFAULT_TRUST, PlatformChain, PlatformTrust, Roots
from harness.sev.malformed import PASSPHRASE_OUT_OF_REACH, has_table_header, malformed_tables
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
from harness.verdict import Verdict

log = logging.getLogger(__name__)

#: TCG boots OVMF -> GRUB -> kernel in ~5 s here (argon2id a little longer); a loaded
#: CI host gets ten times that before a wait is called a hang.
BOOT_TIMEOUT = 120.0
#: A distribution's system (images/debian) takes a minute to its login prompt under TCG
#: here; the same margin as for BOOT_TIMEOUT.
LOGIN_TIMEOUT = 600.0
#: GRUB retries a wrong passphrase 3 times, then grub.cfg sleeps 5 s and reboots.
REFUSAL_TIMEOUT = 180.0
#: The hostile host plays for a while (menus, a key every few seconds, wrong answers).
HOSTILE_TIMEOUT = 300.0
#: What GRUB 2.14's bli module (built in for a distribution's grub.cfg, see
#: patches/ovmf) says at every start: GRUB runs from the firmware volume, so there is no
#: boot partition whose UUID it could pass on (LoaderDevicePartUUID). The file, function
#: and line prove it is this GRUB's own bli, not a module of another version.
FIRMWARE_ERRORS = (r"bli\.c:set_loader_device_part_uuid:\d+:unable to find boot device",)
#: GRUB errors that are part of the fallback path, not failures.
FALLBACK_ERRORS = (
    r"EFI secret area holds no secret table",
    r"no key protector provided a usable key",
    r"stays locked",
    r"access denied",
    r"Invalid passphrase",
    r"no such cryptodisk found",
    r"failed to find any grub configuration",
)
#: efisecret refusing a malformed page, in its own words.
PLANTED_ERRORS = (r"EFI secret (?:area|table)", r"disk passphrase in the EFI secret table")
#: The host's disk in phase one: the secret does not unlock it, and GRUB must not ask.
FOREIGN_DISK_ERRORS = (
    r"no key protector provided a usable key",
    r"stays locked",
)
#: search-hijack: the owner's grub.cfg searches for a UUID the host garbled, and (the
#: defence holding) finds it nowhere.
SEARCH_MISSED = r"no such device: [0-9a-fA-F-]+"
#: search-hijack on a Debian image: its initramfs finds the owner's root damaged.
DEBIAN_ROOT_REFUSED = r"Failed to mount /dev/mapper/\S+ as root file system"
#: A wrong answer to GRUB's CLI lock, and the owner's grub.cfg failing to load a kernel.
CONSOLE_ERRORS = (
    r"access denied",
    r"Invalid passphrase",
    r"not found",
    r"you need to load the kernel first",
)


#: The owner's images a scenario of the minimal recipe boots as well.
OWNER_RECIPES = ("minimal", "debian")


class Secret(enum.StrEnum):
    NONE = "none"
    GOOD = "good"
    WRONG = "wrong"
    PLANTED = "planted"  # a malformed page in place of the owner's (harness.sev.malformed)


@dataclass(frozen=True)
class Scenario:
    """One boot: what the owner injects, what is typed, what the host does, how it ends.

    Attributes:
        typed: passphrases typed at GRUB's prompt, True for the right one.
        before_prompt: a message the secret path must print before the first prompt
            (proof that the key protector ran and failed for the reason intended).
        check_wipe: read the secret page after the boot and judge GRUB's wipe.
        recipe: the owner's image recipe this scenario boots.
        host: what the hostile host does besides launching.
        attack: what the hostile host does to the launch itself.
        expect_note: the refusal the launch must note (the defence that must hold).
        removes: the owner asks the guest to remove an entry once Linux listed it
            (:data:`~harness.guest.report.REMOVE_SECRET_GUID`); our kernel only.
    """

    name: str
    description: str
    secret: Secret
    typed: tuple[bool, ...] = ()
    ending: Ending = Ending.BOOTS
    tamper: bool = False
    check_wipe: bool = False
    before_prompt: str | None = None
    recipe: str = "minimal"
    host: Host = Host.PASSIVE
    planted: str | None = None
    attack: Attack = Attack.NONE
    expect_note: str | None = None
    removes: bool = False

    def __post_init__(self) -> None:
        if (self.secret is Secret.PLANTED) != (self.planted is not None):
            raise ConfigError(f"{self.name}: a planted page needs its name, and only then.")
        if self.secret is Secret.GOOD and self.typed and not self.expects_prompt:
            raise ConfigError(f"{self.name}: a good secret never leads to a prompt.")
        boots = self.ending is Ending.BOOTS
        if boots and self.secret is not Secret.GOOD and not any(self.typed):
            raise ConfigError(f"{self.name}: without a good secret it can only boot if typed.")
        if self.check_wipe and self.secret is Secret.NONE:
            raise ConfigError(f"{self.name}: the wipe check needs an injected secret.")
        impostor = self.host is Host.IMPOSTOR
        if impostor != (self.ending is Ending.UNPROVEN):
            raise ConfigError(f"{self.name}: the impostor, and only it, ends unproven.")
        if impostor and (self.secret is not Secret.NONE or self.typed):
            raise ConfigError(f"{self.name}: the impostor plays where the owner injected nothing.")
        if (
            not impostor
            and self.host is not Host.PASSIVE
            and (self.secret is not Secret.GOOD or self.typed)
        ):
            raise ConfigError(f"{self.name}: the hostile host plays against a good secret.")
        if self.attack is not Attack.NONE and (self.secret is not Secret.GOOD or not self.typed):
            raise ConfigError(f"{self.name}: a launch attack defeats a good secret: prompt.")
        if self.attack is not Attack.NONE and self.expect_note is None:
            raise ConfigError(f"{self.name}: a launch attack names the refusal it expects.")
        if self.removes and (self.linux_sees is not LinuxSees.TABLE or not boots):
            raise ConfigError(f"{self.name}: only a table that reaches Linux can be removed.")

    @property
    def expects_prompt(self) -> bool:
        if self.ending is Ending.WIPES:  # a valid table means no prompt
            return False
        if self.host is Host.IMPOSTOR:  # GRUB's, for the host's own disk
            return True
        return self.secret is not Secret.GOOD or self.tamper or self.attack is not Attack.NONE

    @property
    def injects(self) -> bool:
        """The owner builds a table (it may still not reach the guest)."""
        return self.secret in (Secret.GOOD, Secret.WRONG)

    @property
    def linux_sees(self) -> LinuxSees:
        """What a guest with our kernel must find in the secret area."""
        if self.secret is Secret.PLANTED:
            return LinuxSees.PLANTED
        if self.injects and not self.tamper and self.attack is Attack.NONE:
            return LinuxSees.TABLE
        return LinuxSees.NOTHING

    @property
    def simulated_only(self) -> str | None:
        """Why this scenario cannot run on SEV hardware (None: it can)."""
        if self.secret is Secret.PLANTED:
            return "on SEV hardware the host cannot write the encrypted secret page"
        if self.host is Host.RESET:
            return (
                "an SEV-ES guest cannot be reset, and a plain SEV host's reset is not yet "
                "played on hardware"
            )
        if self.attack is not Attack.NONE:
            return "the launch attacks are not yet played through QEMU on SEV hardware"
        if self.check_wipe or self.removes:
            return "on SEV hardware pmemsave reads the secret page encrypted"
        return None

    @property
    def allowed_errors(self) -> tuple[str, ...]:
        """The GRUB errors this scenario's path prints by design."""
        return FIRMWARE_ERRORS + self._path_errors

    @property
    def _path_errors(self) -> tuple[str, ...]:
        if self.ending is Ending.WIPES or self.secret is Secret.PLANTED:
            return FALLBACK_ERRORS + PLANTED_ERRORS
        if self.expects_prompt:
            return FALLBACK_ERRORS
        if self.host is Host.FOREIGN_DISK:
            return FOREIGN_DISK_ERRORS
        if self.host is Host.SEARCH_HIJACK:
            return (SEARCH_MISSED,)
        if self.host in (Host.CONSOLE_KEYS, Host.MENU_WAIT):
            return CONSOLE_ERRORS
        return ()

    def takes(self, recipe: str) -> bool:
        """Whether this scenario boots an image of *recipe*: the owner's scenarios boot
        the minimal image and the Debian one alike."""
        return recipe == self.recipe or (self.recipe == "minimal" and recipe in OWNER_RECIPES)

    @property
    def play(self) -> verdicts.Play:
        shown = (SEARCH_MISSED,) if self.host is Host.SEARCH_HIJACK else ()
        return verdicts.Play(self.ending, self.typed, self.host, self.before_prompt, shown=shown)

    @property
    def expected_failures(self) -> tuple[str, ...]:
        """Failure patterns this scenario's guest shows by design: with its root's UUID
        garbled, our kernel's initramfs rightly refuses to mount it."""
        return ("the initramfs failing",) if self.host is Host.SEARCH_HIJACK else ()

    @property
    def needs_host_disk(self) -> bool:
        """The host brings its own disk (or what it holds) to this scenario."""
        return self.host in (
            Host.FOREIGN_DISK,
            Host.SEARCH_HIJACK,
            Host.OWNER_DISK_MISSING,
            Host.IMPOSTOR,
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("passwordless", "good secret: no prompt, the image boots", Secret.GOOD),
        Scenario(
            "no-secret",
            "nothing injected: GRUB says the area holds no table, prompts, the passphrase unlocks",
            Secret.NONE,
            typed=(True,),
            before_prompt=verdicts.NO_TABLE,
        ),
        Scenario(
            "wrong-secret",
            "the owner's table holds a passphrase that opens nothing: a valid table means no "
            "prompt, so GRUB wipes the whole secret area and powers off",
            Secret.WRONG,
            ending=Ending.WIPES,
        ),
        Scenario(
            "refusal",
            "no secret, wrong passphrases typed: GRUB gives up and reboots, no boot",
            Secret.NONE,
            typed=(False, False, False),
            ending=Ending.GIVES_UP,
            before_prompt=verdicts.NO_TABLE,
        ),
        Scenario(
            "secret-wiped",
            "after a passwordless boot the passphrase is gone from "
            "the secret page; other secrets are intact",
            Secret.GOOD,
            check_wipe=True,
        ),
        Scenario(
            "secret-removed",
            "good secret, passwordless; Linux lists the entry the owner asks it to remove, "
            "the guest removes it: on the page its GUID and data are zero, its length and "
            "place kept, the other secrets intact (our kernel only)",
            Secret.GOOD,
            removes=True,
        ),
        Scenario(
            "tampered-firmware",
            "one byte of OVMF changed: the owner refuses to inject; prompt, then unlock",
            Secret.GOOD,
            typed=(True,),
            tamper=True,
            before_prompt=verdicts.NO_TABLE,
            expect_note=owner_flow.REFUSED_MEASUREMENT,
        ),
        Scenario(
            "replayed-secret",
            "the host relaunches with the recorded session and injects the packet recorded "
            "from the previous launch: the platform refuses it; prompt, then unlock",
            Secret.GOOD,
            typed=(True,),
            before_prompt=verdicts.NO_TABLE,
            attack=Attack.REPLAY,
            expect_note=owner_flow.REFUSED_REPLAY,
        ),
        Scenario(
            "wrong-policy",
            "the host launches with a debuggable policy the session's policy MAC does not "
            "cover: LAUNCH_START refused, no secret; prompt, then unlock",
            Secret.GOOD,
            typed=(True,),
            before_prompt=verdicts.NO_TABLE,
            attack=Attack.WRONG_POLICY,
            expect_note=owner_flow.REFUSED_LAUNCH_START,
        ),
        Scenario(
            "foreign-pdh",
            "the host hands the owner another platform's chain, which the owner was not told "
            "to trust: refused before any secret exists; prompt, then unlock",
            Secret.GOOD,
            typed=(True,),
            before_prompt=verdicts.NO_TABLE,
            attack=Attack.FOREIGN_PDH,
            expect_note=owner_flow.REFUSED_CHAIN,
        ),
        Scenario(
            "foreign-disk",
            "the host attaches its own LUKS disk and types its passphrase at any prompt: "
            "the owner's root boots, the host's grub.cfg never runs",
            Secret.GOOD,
            host=Host.FOREIGN_DISK,
        ),
        Scenario(
            "search-hijack",
            "the host garbles the ciphertext block holding half of the owner's root "
            "filesystem UUID and attaches a filesystem of its own with that UUID, its kernel "
            "on it: the owner's grub.cfg, which searches by UUID, finds it nowhere, and the "
            "host's kernel never runs",
            Secret.GOOD,
            ending=Ending.STOPS,
            host=Host.SEARCH_HIJACK,
        ),
        Scenario(
            "reset-replay",
            "the host resets a plain SEV guest once its root booted: the second boot finds "
            "the page as the first left it (the passphrase entry wiped, the extras live); "
            "no prompt, the area wiped, power off",
            Secret.GOOD,
            ending=Ending.WIPES,
            host=Host.RESET,
        ),
        Scenario(
            "owner-disk-missing",
            "the host launches a valid table with extras and its own LUKS disk instead of "
            "the owner's, and types its passphrase at any prompt: no prompt, the area wiped, "
            "power off; the host's grub.cfg never runs",
            Secret.GOOD,
            ending=Ending.WIPES,
            host=Host.OWNER_DISK_MISSING,
        ),
        Scenario(
            "impostor",
            "the owner injected nothing (a launch it refused); the host launches its own "
            "disk, types its passphrase at GRUB's prompt, and its kernel prints the owner's "
            "marker and an earlier boot's proof, copied from the console: the judge must not "
            "take it for the owner's root",
            Secret.NONE,
            ending=Ending.UNPROVEN,
            host=Host.IMPOSTOR,
        ),
        Scenario(
            "keyslot-broken",
            "the host kills the owner's passphrase key slot (slot 0) on the disk it launches: "
            "the secret opens nothing; no prompt, the area wiped, power off",
            Secret.GOOD,
            ending=Ending.WIPES,
            host=Host.PASSPHRASE_SLOT,
        ),
        Scenario(
            "console-keys",
            "the host presses c, e and Esc at the owner's menu and answers GRUB's lock with "
            "wrong passphrases: no shell, no editor, no owner data; Enter boots",
            Secret.GOOD,
            recipe="menu",
            host=Host.CONSOLE_KEYS,
        ),
        Scenario(
            "broken-keyslot",
            "the host kills the key file's LUKS slot on the Debian disk it launches: GRUB "
            "unlocks with the secret, the initramfs cannot; it must stop, never offer its "
            "root shell (which holds the key file) or a prompt on the host's console",
            Secret.GOOD,
            ending=Ending.HALTS,
            recipe="debian",
            host=Host.KEY_SLOT,
        ),
        Scenario(
            "broken-kernel",
            "the owner's grub.cfg names a missing kernel after the secret unlocked the "
            "root: GRUB stops locked, never a shell",
            Secret.GOOD,
            ending=Ending.HALTS,
            recipe="broken-kernel",
            host=Host.CONSOLE_KEYS,
        ),
        Scenario(
            "stalled-menu",
            "every entry of the owner's locked menu fails after the secret unlocked the "
            "root, and the host presses nothing: GRUB waits at 'Press any key' as long as "
            "the host likes, and the volume keys must be gone while it waits",
            Secret.GOOD,
            ending=Ending.HALTS,
            recipe="stalled-menu",
            host=Host.MENU_WAIT,
        ),
    )
}
#: One scenario per malformed page (``planted-<name>``): GRUB must refuse the page. A
#: page with a valid table header is the owner's table as far as GRUB can tell, so no
#: prompt: GRUB wipes the area and powers off. Any other page means the owner injected
#: nothing: GRUB prompts and the typed passphrase unlocks. No hang, no boot without it.
SCENARIOS |= {
    f"planted-{name}": (
        Scenario(
            f"planted-{name}",
            f"a malformed secret page ({name}) with a valid table header in place of the "
            "owner's: GRUB refuses it, wipes the area and powers off, no prompt",
            Secret.PLANTED,
            ending=Ending.WIPES,
            planted=name,
        )
        if has_table_header(page)
        else Scenario(
            f"planted-{name}",
            f"a malformed secret page ({name}) without a valid table header in place of the "
            "owner's: GRUB finds no table, prompts, the typed passphrase unlocks",
            Secret.PLANTED,
            typed=(True,),
            before_prompt=verdicts.NO_USABLE_KEY,
            planted=name,
        )
    )
    for name, page in malformed_tables(b"x")
}


@dataclass(frozen=True)
class HostDisk:
    """The hostile host's own LUKS disk, the passphrase it made it with, and its own
    kernel and initramfs in the clear (:data:`harness.guest.image.HOST_BOOT`)."""

    disk: Path
    passphrase: Passphrase
    boot: Path


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
    *,
    firmware: Path,
    expected_digest: bytes,
    disk: Path,
    passphrase: Passphrase,
    workdir: Path,
    accel: qemu.Accel,
    emulator: qemu.Qemu = qemu.SYSTEM,
    host_disk: HostDisk | None = None,
    kind: LaunchKind = LaunchKind.SIMULATED,
    guest_kernel: GuestKernel = GuestKernel.DEBIAN,
    extras: Sequence[SecretEntry] | None = None,
    disk_format: DiskFormat = DiskFormat.RAW,
    trust: PlatformTrust = DEFAULT_TRUST,
) -> Iterator[Launch]:
    """Do the guest owner's part of the launch and configure QEMU (*emulator*) for it.

    The firmware copy and the decrypted secret live in a private directory of this run,
    the QMP socket in a short-named one under the system's temporary directory; both
    are removed on the way out, so parallel runs never collide.

    Args:
        guest_kernel: the kernel the image boots (``Image.guest_kernel``).
        extras: the secrets beside the passphrase (``--entry``); None for the defaults
            (:func:`harness.boots.extras.owner_extras`).
        trust: what the owner accepts of an SEV hardware platform's chain.

    Raises:
        ConfigError: the scenario needs the host's disk and none was given, or our
            kernel and the image boots another.
        SecretFormatError: the owner's table does not fit the firmware's secret block.
    """
    if scenario.needs_host_disk and host_disk is None:
        raise ConfigError(f"{scenario.name} needs the host's own disk.")
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
        fw_bytes = firmware.read_bytes()
        vcpus = _vcpus(kind, emulator)
        owner_digest = _owner_digest(fw_bytes, expected_digest, vcpus)
        if scenario.tamper:
            fw_bytes = tamper(fw_bytes)
            notes.append("firmware tampered (one byte in the variable store's spare area)")
        table = parse_guid_table(fw_bytes)
        area = table.secret_block if table else None
        if area is None or not area.present:
            raise FirmwareFormatError(f"{firmware} has no secret block to inject into.")
        loaded = private / "OVMF.fd"
        loaded.write_bytes(fw_bytes)
        if (killed := KILLED_SLOTS.get(scenario.host)) is not None:
            _require_raw(scenario, disk_format)
            slot, whose = killed
            damaged = private / disk.name
            image.kill_key_slot(disk, damaged, slot)
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
        owner_table = _owner_table(
            scenario, passphrase, wrong, extras, area.size, nonce if by_table else None
        )
        plain = owner_table.serialize(area.size) if owner_table else None
        plan, sev = None, None
        if kind.hardware:
            plan, sev = _hardware(
                scenario, owner_digest, plain, private, emulator, kind, vcpus, notes, trust
            )
        else:
            # The whole of RAM is the harness's only in a simulated launch (encrypted on
            # hardware); there the page goes in once, and RAM is judged however the boot
            # ends.
            ram = GuestRam(qemu.GUEST_MEMORY_MIB)
            page = _launch(scenario, fw_bytes, owner_digest, passphrase, plain, notes, vcpus)
            if page is not None:
                ram.write(area.base, page)
        # pmemsave reads the page encrypted on hardware: the second opinion is simulated.
        page_after = (scenario.ending is Ending.WIPES and not kind.hardware) or (
            scenario.ending is Ending.BOOTS
            and (scenario.check_wipe or (guest_kernel is GuestKernel.BUILT and not kind.hardware))
        )
        cfg = qemu.LaunchConfig(
            firmware=loaded,
            disk=disk,
            extra_disks=extra_disks,
            accel=accel,
            qmp=sockets / "qmp.sock",
            ram=ram.backend() if ram else None,
            no_shutdown=page_after or ram is not None,
            emulator=emulator,
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
    token = image.load(disk.parent).metadata.token
    earlier = proof.mac(proof.read_key(disk.parent), proof.FW_CFG, proof.fresh_nonce())
    return (
        f"HARNESS-PROOF from={proof.FW_CFG} mac={earlier};"
        f"HARNESS-BOOTED token={token} root=/dev/mapper/root secrets=absent"
    )


#: The LUKS key slot each slot-killing host kills, and whose it is.
KILLED_SLOTS = {
    Host.KEY_SLOT: (image.KEY_FILE_SLOT, "the key file's"),
    Host.PASSPHRASE_SLOT: (image.PASSPHRASE_SLOT, "the passphrase's"),
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
    metadata = image.load(disk.parent).metadata
    if metadata.root_fs_uuid is None:
        raise ConfigError(
            f"{scenario.name}: {disk.parent}/image.json does not name the root's UUID.",
            hint="rebuild the image with ./inv build-image",
        )
    damaged = private / disk.name
    image.garble_root_uuid(disk, damaged, metadata)
    hijack = private / "host-root.img"
    image.hijack_disk(host_disk.boot, metadata.root_fs_uuid, metadata.kernel, hijack, private)
    notes.append(
        "the host garbled the ciphertext block holding half of the root's filesystem UUID "
        "and attached an ext4 of that UUID with its own kernel"
    )
    return damaged, (hijack,)


def run_scenario(
    scenario: Scenario,
    *,
    firmware: Path,
    expected_digest: bytes,
    disk: Path,
    passphrase: Passphrase,
    token: str,
    variant: str,
    workdir: Path,
    accel: qemu.Accel,
    timeout: float = BOOT_TIMEOUT,
    emulator: qemu.Qemu = qemu.SYSTEM,
    host_disk: HostDisk | None = None,
    kind: LaunchKind = LaunchKind.SIMULATED,
    guest_kernel: GuestKernel = GuestKernel.DEBIAN,
    extras: Sequence[SecretEntry] | None = None,
    ready: Ready = Ready.MARKER,
    disk_format: DiskFormat = DiskFormat.RAW,
    trust: PlatformTrust = DEFAULT_TRUST,
) -> Result:
    """Run one scenario end to end; a verdict, never an exception for guest behaviour.

    The transcript is ``workdir/console.log``; *emulator* is the QEMU that runs it;
    *host_disk* is the host's own disk for the foreign-disk scenario. With
    *guest_kernel* built, what Linux lists is judged too (:mod:`harness.boots.linux`);
    *extras* replace the default secrets beside the passphrase. *ready* says what shows
    the image booted: for a distribution's login prompt, its initramfs must never ask
    for the passphrase either, and the boot may take LOGIN_TIMEOUT.

    Raises:
        ConfigError, SecretFormatError: see :func:`prepared`.
    """
    transcript = workdir / "console.log"
    started = time.monotonic()
    console: Console | None = None
    gone: float | None = None
    proof_key = proof.read_key(disk.parent)
    with prepared(
        scenario,
        firmware=firmware,
        expected_digest=expected_digest,
        disk=disk,
        passphrase=passphrase,
        workdir=workdir,
        accel=accel,
        emulator=emulator,
        host_disk=host_disk,
        kind=kind,
        guest_kernel=guest_kernel,
        extras=extras,
        disk_format=disk_format,
        trust=trust,
    ) as launch:
        notes = launch.notes
        redact = tuple(
            p.value for p in (passphrase, launch.wrong, host_disk and host_disk.passphrase) if p
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
                        token=token,
                        passphrase=passphrase,
                        wrong=launch.wrong,
                        host_typed=host_disk.passphrase if host_disk else None,
                        timeout=_timeout(scenario, ready, timeout),
                        exit_timeout=REFUSAL_TIMEOUT,
                        proof=proof.Proof(launch.nonce, proof_key, launch.proof_source),
                    )
                    if proved:
                        notes.append(proved)

                if scenario.host is Host.RESET:
                    play(_on(FIRST_BOOT, Host.PASSIVE, ready))
                    guest.reset()
                    notes.append("the host reset the guest once the owner's root had booted")
                play(play_on(scenario, ready))
                notes += _after_boot(
                    scenario, guest, launch, passphrase, workdir, guest_kernel, timeout
                )
                notes += _after_wipe(scenario, guest, launch, workdir)
                notes += _check_ram(scenario, guest, launch, passphrase, guest_kernel, ready)
            gone = time.monotonic()
            _check_refusal(scenario, notes)
            passed, detail = True, "; ".join(notes) or "as expected"
        except (GuestVerdict, VerificationError) as err:
            passed, detail = False, str(err)
    total = time.monotonic() - started
    return Result(
        scenario.name,
        variant,
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


#: The boot before the host's reset: the owner's root boots passwordless.
FIRST_BOOT = verdicts.Play(Ending.BOOTS, ())


def play_on(scenario: Scenario, ready: Ready) -> verdicts.Play:
    """*scenario*'s play on an image that shows it booted by *ready*."""
    return _on(scenario.play, scenario.host, ready)


def _on(play: verdicts.Play, host: Host, ready: Ready) -> verdicts.Play:
    """*play* on an image that shows it booted by *ready*.

    A distribution's image of ours names its root and never searches (images/debian),
    so search-hijack's proof that it played is the owner's initramfs refusing the root
    whose UUID the host garbled: the owner's root was the one used, damaged as planned.
    """
    if ready is Ready.LOGIN:
        shown = (DEBIAN_ROOT_REFUSED,) if host is Host.SEARCH_HIJACK else ()
        return dataclasses.replace(
            play,
            marker=verdicts.LOGIN,
            never=(verdicts.INITRAMFS_PROMPT,),
            shown=shown,
        )
    return play


def _timeout(scenario: Scenario, ready: Ready, timeout: float) -> float:
    if ready is Ready.LOGIN:
        return max(timeout, LOGIN_TIMEOUT)
    return HOSTILE_TIMEOUT if scenario.host is not Host.PASSIVE else timeout


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
    emulator: qemu.Qemu,
    kind: LaunchKind,
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
    caps = host_sev.platform_capabilities(emulator.command())
    pek, oca, cek = host_sev.split_cert_chain(caps.cert_chain)
    chain = PlatformChain(
        SevCertificate.parse(caps.pdh, "the platform's PDH"),
        SevCertificate.parse(pek, "the platform's PEK"),
        SevCertificate.parse(oca, "the platform's OCA"),
        SevCertificate.parse(cek, "the platform's CEK"),
    )
    policy = owner_flow.OWNER_POLICY | (int(PolicyFlag.ES) if kind.es else 0)
    if vcpus is not None:
        # The host's QEMU, kernel and kvm_amd decide these; the owner records what it assumed.
        notes.append(f"SEV-ES: {vcpus.describe(snp=False)}")
    owner = owner_flow.Owner(expected, Roots.amd(), policy, trust)
    session = owner.open_session(chain)
    godh, blob = private / "godh.b64", private / "session.b64"
    write_private({godh: base64.b64encode(session.godh_cert), blob: base64.b64encode(session.blob)})
    sev = SevGuestObject(policy, godh, blob, caps.cbitpos, caps.reduced_phys_bits)
    return HardwarePlan(owner, session, table), sev


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
    passphrase: Passphrase,
    workdir: Path,
    guest_kernel: GuestKernel,
    timeout: float,
) -> list[str]:
    """Once the guest booted: Linux's report (our kernel), then the secret page read
    after the guest powered off, judged for GRUB's wipe, against Linux's listing and
    for the removal."""
    if scenario.ending is not Ending.BOOTS:
        return []
    report = None
    if guest_kernel is GuestKernel.BUILT:
        report = verdicts.await_report(guest.console, timeout)
    tail = guest.console.tail()
    notes = []
    if report is not None:
        notes.append(linux.judge_report(report, scenario.linux_sees, launch.extras, tail))
    if not launch.page_after:
        return notes
    page = _read_page(guest, launch, workdir)
    if scenario.secret is Secret.PLANTED and scenario.planted not in PASSPHRASE_OUT_OF_REACH:
        notes.append(verdicts.check_planted_page(page, passphrase, tail))
    if scenario.check_wipe:
        injected = passphrase if scenario.secret is Secret.GOOD else launch.wrong
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


def _check_ram(
    scenario: Scenario,
    guest: qemu.Guest,
    launch: Launch,
    passphrase: Passphrase,
    guest_kernel: GuestKernel,
    ready: Ready,
) -> list[str]:
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
        needles["the passphrase"] = passphrase.value
    if _key_must_be_gone(scenario, guest_kernel, ready):
        key = image.disk_volume_key(launch.cfg.disk, passphrase, launch.private)
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
    passphrase: Passphrase,
    wrong: Passphrase,
    given: Sequence[SecretEntry] | None,
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
    injected = wrong if scenario.secret is Secret.WRONG else passphrase
    extras = owner_extras.owner_extras(
        given,
        injected.value,
        area_size,
        remove=scenario.removes,
        nonce=nonce.encode() if nonce else None,
    )
    return SecretTable((disk_passphrase_entry(injected.value), *extras))
