"""The boot scenarios, as data, and the simulated launch that runs them.

Each scenario says what secret the guest owner tries to inject, what (if anything) is
typed at GRUB's prompt, and what must happen. The launch is the real guest-owner flow
against the simulated secure element: the element measures the firmware it is about to
load, the owner checks that measurement against the digest in the build manifest, and
only then builds the LAUNCH_SECRET packet, which the element checks and decrypts into
the secret page (QEMU's generic loader, before the CPU starts).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets as random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import qemu
from harness.console import GuestVerdict
from harness.errors import ConfigError, FirmwareFormatError, VerificationError
from harness.files import write_private
from harness.firmware import guids
from harness.firmware.fv import find_volumes
from harness.firmware.guidtable import MemoryBlock, parse_guid_table
from harness.passphrase import Passphrase
from harness.sev.measure import PlatformInfo, verify_measurement
from harness.sev.packet import TransportKeys, build_packet
from harness.sev.secret import SecretEntry, SecretTable, disk_passphrase_entry
from harness.sev.simulated import SimulatedSecureElement

log = logging.getLogger(__name__)

#: A second secret beside the disk passphrase, to prove GRUB leaves it intact.
EXTRA_SECRET_GUID = uuid.UUID("b2f94a13-42c5-4f6c-9d6b-6c4f7e1a0c55")
#: What the simulated platform reports (SEV API 1.55, build 0, policy NODBG).
PLATFORM = PlatformInfo(api_major=1, api_minor=55, build=0, policy=0x1)
#: TCG boots OVMF -> GRUB -> kernel in ~5 s here (argon2id a little longer); a loaded
#: CI host gets ten times that before a wait is called a hang.
BOOT_TIMEOUT = 120.0
#: GRUB retries a wrong passphrase 3 times, then grub.cfg sleeps 5 s and reboots.
REFUSAL_TIMEOUT = 180.0
# The token must be followed by the line end: a match on a partial line would cut it.
MARKER = r"HARNESS-BOOTED token=(\w+)\s"
PROMPT = r"Enter passphrase for"
#: GRUB errors that are part of the fallback path, not failures.
FALLBACK_ERRORS = (
    r"EFI secret area holds no secret table",
    r"no key protector provided a usable key",
    r"access denied",
    r"Invalid passphrase",
    r"no such cryptodisk found",
    r"failed to find any grub configuration",
)


class Secret(enum.StrEnum):
    NONE = "none"
    GOOD = "good"
    WRONG = "wrong"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    secret: Secret
    typed: tuple[bool, ...] = ()  # passphrases typed at the prompt: True = the right one
    boots: bool = True
    tamper: bool = False
    check_wipe: bool = False

    def __post_init__(self) -> None:
        if self.secret is Secret.GOOD and self.typed and not self.tamper:
            raise ConfigError(f"{self.name}: a good secret never leads to a prompt.")
        if self.boots and self.secret is not Secret.GOOD and not any(self.typed):
            raise ConfigError(f"{self.name}: without a good secret it can only boot if typed.")
        if self.check_wipe and self.secret is not Secret.GOOD:
            raise ConfigError(f"{self.name}: the wipe check needs a good secret.")

    @property
    def expects_prompt(self) -> bool:
        return self.secret is not Secret.GOOD or self.tamper


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("passwordless", "good secret: no prompt, the image boots", Secret.GOOD),
        Scenario(
            "no-secret",
            "nothing injected: GRUB prompts, the passphrase unlocks",
            Secret.NONE,
            typed=(True,),
        ),
        Scenario(
            "wrong-secret",
            "a secret with the wrong passphrase: prompt, then unlock",
            Secret.WRONG,
            typed=(True,),
        ),
        Scenario(
            "refusal",
            "no secret, wrong passphrases typed: GRUB gives up, no boot",
            Secret.NONE,
            typed=(False, False, False),
            boots=False,
        ),
        Scenario(
            "secret-wiped",
            "after a passwordless boot the passphrase is gone from "
            "the secret page; other secrets are intact",
            Secret.GOOD,
            check_wipe=True,
        ),
        Scenario(
            "tampered-firmware",
            "one byte of OVMF changed: the owner refuses to inject; prompt, then unlock",
            Secret.GOOD,
            typed=(True,),
            tamper=True,
        ),
    )
}


@dataclass
class Result:
    scenario: str
    variant: str
    passed: bool
    detail: str
    seconds: float
    transcript: Path
    notes: list[str] = field(default_factory=list)


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
    """A launch ready to start: QEMU's configuration and what the owner did."""

    cfg: qemu.LaunchConfig
    wrong: Passphrase
    area: MemoryBlock
    notes: list[str]


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
) -> Iterator[Launch]:
    """Do the guest owner's part of the launch and configure QEMU (*emulator*) for it.

    The firmware copy, the decrypted secret and the QMP socket live in a private
    directory of this run, removed on the way out, so parallel runs never collide.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".run-", dir=workdir))
    try:
        notes: list[str] = []
        fw_bytes = firmware.read_bytes()
        if scenario.tamper:
            fw_bytes = tamper(fw_bytes)
            notes.append("firmware tampered (one byte in the variable store's spare area)")
        table = parse_guid_table(fw_bytes)
        area = table.secret_block if table else None
        if area is None or not area.present:
            raise FirmwareFormatError(f"{firmware} has no secret block to inject into.")
        loaded = private / "OVMF.fd"
        loaded.write_bytes(fw_bytes)
        wrong = Passphrase(("wrong-" + random.token_urlsafe(12)).encode())
        secret = _launch(scenario, fw_bytes, expected_digest, passphrase, wrong, private, notes)
        cfg = qemu.LaunchConfig(
            firmware=loaded,
            disk=disk,
            accel=accel,
            qmp=private / "qmp.sock",
            secret=(secret, area.base) if secret else None,
            no_shutdown=scenario.check_wipe,
            emulator=emulator,
        )
        yield Launch(cfg, wrong, area, notes)
    finally:
        shutil.rmtree(private, ignore_errors=True)


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
) -> Result:
    """Run one scenario end to end; a verdict, never an exception for guest behaviour.

    The transcript is ``workdir/console.log``; *emulator* is the QEMU that runs it.
    """
    transcript = workdir / "console.log"
    started = time.monotonic()
    with prepared(
        scenario,
        firmware=firmware,
        expected_digest=expected_digest,
        disk=disk,
        passphrase=passphrase,
        workdir=workdir,
        accel=accel,
        emulator=emulator,
    ) as launch:
        notes = launch.notes
        allowed = () if not scenario.expects_prompt else FALLBACK_ERRORS
        redact = (passphrase.value, launch.wrong.value)
        try:
            with qemu.running(launch.cfg, transcript, redact, allowed) as guest:
                _drive(scenario, guest, passphrase, launch.wrong, token, timeout)
                if scenario.check_wipe:
                    area = launch.area
                    notes += _check_wipe(guest, area.base, area.size, passphrase, workdir)
            passed, detail = True, "; ".join(notes) or "as expected"
        except (GuestVerdict, VerificationError) as err:
            passed, detail = False, str(err)
    return Result(
        scenario.name, variant, passed, detail, time.monotonic() - started, transcript, notes
    )


def _launch(
    scenario: Scenario,
    fw: bytes,
    expected: bytes,
    passphrase: Passphrase,
    wrong: Passphrase,
    workdir: Path,
    notes: list[str],
) -> Path | None:
    """The guest-owner flow; returns the decrypted secret table file, or None."""
    keys = TransportKeys.generate()
    psp = SimulatedSecureElement(keys, PLATFORM)
    psp.launch_update_data(fw)
    measure = psp.launch_measure()
    try:
        verify_measurement(keys.tik, PLATFORM, expected, measure)
    except VerificationError:
        notes.append("guest owner refused: the launch measurement does not match the manifest")
        return None
    if scenario.secret is Secret.NONE:
        return None
    injected = passphrase if scenario.secret is Secret.GOOD else wrong
    entries = [disk_passphrase_entry(injected.value)]
    if scenario.check_wipe:
        entries.append(SecretEntry(EXTRA_SECRET_GUID, b"harness extra secret"))
    table = parse_guid_table(fw)
    size = table.secret_block.size if table and table.secret_block else None
    packet = build_packet(SecretTable(tuple(entries)).serialize(size), keys, measure.measurement)
    plain = psp.launch_secret(packet)
    path = workdir / "secret.bin"
    write_private({path: plain})
    return path


def _drive(
    scenario: Scenario,
    guest: qemu.Guest,
    passphrase: Passphrase,
    wrong: Passphrase,
    token: str,
    timeout: float,
) -> None:
    con = guest.console
    if not scenario.expects_prompt:
        m = con.expect(MARKER, timeout, forbid=(PROMPT,))
        _check_token(m.group(1), token)
        return
    for typed_right in scenario.typed:
        con.expect(PROMPT, timeout, forbid=(MARKER,))
        con.sendline((passphrase if typed_right else wrong).typed())
    if scenario.boots:
        m = con.expect(MARKER, timeout, forbid=(PROMPT,))
        _check_token(m.group(1), token)
        return
    if not con.wait_exit(REFUSAL_TIMEOUT):
        raise GuestVerdict("The guest neither booted nor gave up in time.", "timeout", con.tail())
    if "HARNESS-BOOTED" in con.text():
        raise GuestVerdict("The guest booted with wrong passphrases.", "booted", con.tail())


def _check_token(seen: str, token: str) -> None:
    if seen != token:
        raise GuestVerdict(f"Another image booted (token {seen}, expected {token}).", "token", "")


def _check_wipe(
    guest: qemu.Guest, base: int, size: int, passphrase: Passphrase, workdir: Path
) -> list[str]:
    """Read the secret page after the guest powered off and judge it like Linux would."""
    con = guest.console
    dump = workdir / "secret-page.bin"
    deadline = time.monotonic() + 30
    page = b""
    while time.monotonic() < deadline:
        page = guest.pmemsave(base, size, dump)
        if page:
            break
        time.sleep(0.2)
    try:
        if passphrase.value in page:
            raise GuestVerdict(
                "The passphrase is still in the secret page.", "secret left", con.tail()
            )
        table = SecretTable.parse(page)
        entry = next((e for e in table.entries if e.deleted), None)
        if entry is None or any(entry.data) or entry.length != len(passphrase.value) + 1 + 20:
            raise GuestVerdict(
                "The disk passphrase entry was not wiped as Linux expects "
                "(zero GUID and data, length kept).",
                "not wiped",
                con.tail(),
            )
        extra = table.get(EXTRA_SECRET_GUID)
        if extra is None or extra.data != b"harness extra secret":
            raise GuestVerdict("The extra secret beside the passphrase was damaged.", "damaged", "")
        if table.get(guids.DISK_PASSPHRASE_ENTRY) is not None:
            raise GuestVerdict("The disk passphrase entry is still live.", "not wiped", "")
    finally:
        dump.unlink(missing_ok=True)
    return [
        "secret page after boot: passphrase entry wiped (GUID and data zero, length "
        "kept), extra secret intact, passphrase bytes absent"
    ]
