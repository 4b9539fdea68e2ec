"""The boot scenarios, as data: what the guest owner injects, what the host does, what
is typed at GRUB's prompt, and what must happen.

:mod:`harness.boots.prepare` turns a scenario into a launch (the owner's flow and QEMU's
configuration); :mod:`harness.boots.runner` boots it and judges it.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from dataclasses import dataclass

from harness.boots import launch as owner_flow
from harness.boots import verdicts
from harness.boots.launch import Attack
from harness.boots.linux import LinuxSees
from harness.boots.verdicts import Ending, Host
from harness.errors import (
    ConfigError,
)
from harness.guest.imagemeta import Ready
from harness.sev.malformed import has_table_header, malformed_tables

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


#: A volume that cryptodisk_passphrase_tries=0 keeps locked: our release series' words
#: (patches/grub 0002), and GRUB master's since it fixed the same bug itself (c605317e0).
LOCKED_ERRORS = (r"stays locked", r"passphrase prompting is disabled")


#: GRUB errors that are part of the fallback path, not failures.
FALLBACK_ERRORS = (
    r"EFI secret area holds no secret table",
    r"no key protector provided a usable key",
    *LOCKED_ERRORS,
    r"access denied",
    r"Invalid passphrase",
    r"no such cryptodisk found",
    r"failed to find any grub configuration",
)


#: efisecret refusing a malformed page, in its own words.
PLANTED_ERRORS = (r"EFI secret (?:area|table)", r"disk passphrase in the EFI secret table")


#: The host's disk in phase one: the secret does not unlock it, and GRUB must not ask.
FOREIGN_DISK_ERRORS = (r"no key protector provided a usable key", *LOCKED_ERRORS)


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


#: The boot before the host's reset: the owner's root boots passwordless.
FIRST_BOOT = verdicts.Play(Ending.BOOTS, ())


def play_on(scenario: Scenario, ready: Ready) -> verdicts.Play:
    """*scenario*'s play on an image that shows it booted by *ready*."""
    return play_on_image(scenario.play, scenario.host, ready)


def play_on_image(play: verdicts.Play, host: Host, ready: Ready) -> verdicts.Play:
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
