"""How a scenario is played on the guest's console and judged.

The functions here drive a guest through :class:`GuestIO` (a console and guest-memory
reads) and raise :class:`GuestVerdict` when the guest does what the scenario forbids.
They know nothing of QEMU, so the unit tests play them against scripted fake guests.

Two kinds of play:
* the owner's: wait for the marker, or answer GRUB's passphrase prompts as the scenario
  says (the right passphrase or a wrong one), then require the scenario's ending;
* the hostile host's: it attached a disk of its own and types that disk's passphrase at
  any prompt, or it presses ``c``, ``e`` and Esc at every menu and answers every prompt
  with a wrong passphrase. The owner's data, the host's grub.cfg, a GRUB shell or the
  menu editor must never show.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.errors import GuestVerdict, HarnessError, InputError
from harness.firmware import guids
from harness.guest.proof import Proof
from harness.guest.report import BOOTED_LINE_END, GuestReport
from harness.passphrase import Passphrase
from harness.sev.secret import SecretEntry, SecretTable

# The token must be followed by the line end: a match on a partial line would cut it.
MARKER = r"HARNESS-BOOTED token=(\w+)\s"
#: A distribution's system is up when its login prompt shows; the hostname names the
#: image (images/debian).
LOGIN = r"harness-([0-9a-f]+) login:"
#: A distribution's initramfs asking for the root's passphrase (cryptsetup-initramfs):
#: its key file must unlock the root, so this prompt is never right.
INITRAMFS_PROMPT = r"Please unlock disk"
PROMPT = r"Enter passphrase for"
#: What the firmware's grub.cfg prints when no volume it may boot holds a grub.cfg.
GIVE_UP = r"Failed to find any grub configuration"
#: GRUB 2.14 with its CLI locked by a key protector, when normal mode returns.
CLI_LOCKED = r"Rescue mode has been disabled"
#: The host disk's grub.cfg announces itself with this word (images/host-disk).
HOST_MARKER = r"HOST-GRUB-CFG"
#: The host's own kernel and init, booted in the owner's guest (images/host-disk/init).
HOST_KERNEL = r"HOST-KERNEL-RUNS"
#: GRUB's menu, as drawn on a serial terminal.
MENU = r"Use the \S+ and \S+ keys to select"
ANY_KEY = r"Press any key to continue"
#: GRUB's menu once its default entry and every fallback failed.
ALL_FAILED = r"Failed to boot both default and fallback entries"
#: What the host must never reach: a shell, the menu editor, the owner's kernel line.
GRUB_SHELL = r"grub> "
RESCUE_SHELL = r"grub rescue>|Entering rescue mode"
EDITOR = r"Minimum Emacs-like screen editing is supported"
OWNER_DATA = r"harness\.token="
#: A distribution's initramfs that gave up on the root and offers a root shell on the
#: console (initramfs-tools' prompt, busybox's banner): it holds the key file.
INITRAMFS_SHELL = r"\(initramfs\) |built-in shell \(ash\)"
#: The firmware's grub.cfg when the owner's table opens nothing (patches/ovmf 0005).
WIPED = r"opened no volume to boot from: wiping the secret area"
#: Error messages that prove which part of GRUB's secret path ran.
NO_TABLE = r"holds no secret table"
NO_USABLE_KEY = r"no key protector provided a usable key"
#: Keys the console-keys host presses at menus, in this order, before it gives up and
#: presses Enter; and how long it waits for GRUB to react to one key.
HOST_KEYS = ("c", "e", "\x1b", "c", "e", "\x1b")
KEY_REACTION = 5.0
#: Less data than this in a guest's RAM means the search did not look at a guest that ran:
#: OVMF alone fills tens of MiB.
MIN_TOUCHED = 4 << 20
#: Seconds a powered-off guest's memory is retried for over QMP.
PMEMSAVE_TIMEOUT = 30.0


class GuestIO(Protocol):
    """What the verdicts need of a running guest (QEMU's, or a scripted fake)."""

    def expect_any(
        self, wanted: Mapping[str, str], timeout: float, forbid: Sequence[str] = ()
    ) -> tuple[str, re.Match[str]]: ...

    def send(self, keys: str) -> None: ...

    def sendline(self, text: str) -> None: ...

    def wait_exit(self, timeout: float) -> bool: ...

    def text(self) -> str: ...

    def tail(self, lines: int = 30) -> str: ...

    def check_transcript(self) -> None: ...


class Ending(enum.StrEnum):
    """How a scenario's boot must end."""

    BOOTS = "boots"  # the owner's image prints its marker with its token
    GIVES_UP = "gives-up"  # the firmware's grub.cfg says so, then reboots (QEMU exits)
    HALTS = "halts"  # GRUB stops with its CLI locked, or the guest exits; no shell
    #: The host damaged the owner's root: the guest stops, whether or not the owner's
    #: image got as far as its marker first; only what must never show is judged.
    STOPS = "stops"
    #: The owner's table is there but opens nothing to boot from: GRUB says so, wipes
    #: the secret area and powers off; never a prompt.
    WIPES = "wipes"
    #: The owner's marker shows, token and all, but no root of the owner's printed it:
    #: the root's proof must fail (harness.guest.proof), or the judge was fooled.
    UNPROVEN = "unproven"


class Host(enum.StrEnum):
    """What the host does besides launching the guest."""

    PASSIVE = "passive"  # types what the scenario says, nothing else
    FOREIGN_DISK = "foreign-disk"  # its own LUKS disk attached; types its passphrase
    CONSOLE_KEYS = "console-keys"  # presses c, e, Esc at menus; wrong passphrases
    KEY_SLOT = "key-slot"  # kills the key file's LUKS slot on the disk; wrong passphrases
    #: garbles the root's filesystem UUID and offers a filesystem of its own with that
    #: UUID (its kernel on it); wrong passphrases at any prompt
    SEARCH_HIJACK = "search-hijack"
    #: launches with its own LUKS disk in place of the owner's; types its passphrase
    OWNER_DISK_MISSING = "owner-disk-missing"
    #: kills the owner's passphrase key slot (slot 0); wrong passphrases at any prompt
    PASSPHRASE_SLOT = "passphrase-slot"
    #: where the owner injected nothing, boots its own disk (its passphrase typed), whose
    #: kernel prints a copy of the owner's marker and of an earlier boot's proof
    IMPOSTOR = "impostor"
    #: once the owner's root booted, resets the guest (QMP system_reset) and plays the
    #: next boot over the same memory; wrong passphrases at any prompt
    RESET = "reset"
    #: presses nothing: lets the owner's menu and every "Press any key" wait as long as
    #: it likes (the host owns the timing)
    MENU_WAIT = "menu-wait"


@dataclass(frozen=True)
class Play:
    """What the console side of a scenario needs to know."""

    ending: Ending
    typed: tuple[bool, ...]  # passphrases typed at the prompt: True = the right one
    host: Host = Host.PASSIVE
    before_prompt: str | None = None  # must be on the console before the first prompt
    marker: str = MARKER  # what shows the owner's image booted; group 1 is its token
    never: tuple[str, ...] = ()  # prompts of the guest's own that must never show
    #: what the console must have shown once the play ends: proof that the attack was
    #: really played (and met the defence), not merely that nothing bad showed
    shown: tuple[str, ...] = ()


def play(
    p: Play,
    con: GuestIO,
    *,
    token: str,
    passphrase: Passphrase,
    wrong: Passphrase,
    host_typed: Passphrase | None,
    timeout: float,
    exit_timeout: float,
    proof: Proof,
) -> str | None:
    """Play *p* on *con* and judge it; returns only if the guest did as it must.

    Wherever the owner's image showed its marker, its root must also have answered
    *proof*'s nonce (:mod:`harness.guest.proof`): the token alone is on the host's
    console from every earlier boot.

    Returns:
        what the root's proof showed, or None when no marker showed (and none had to).

    Raises:
        GuestVerdict: what the guest did wrong.
    """
    if p.host is Host.PASSIVE:
        proved = _play_owner(p, con, token, passphrase, wrong, timeout, exit_timeout, proof)
    else:
        own_disk = (Host.FOREIGN_DISK, Host.OWNER_DISK_MISSING, Host.IMPOSTOR)
        typed = host_typed if p.host in own_disk else wrong
        if typed is None:
            raise GuestVerdict("The foreign-disk host has no passphrase to type.", "setup", "")
        proved = _play_hostile(p, con, token, typed, timeout, proof)
    con.check_transcript()
    # Once more over the whole transcript: what arrived after the last wait (a guest
    # that stopped ends a wait after one more read) is judged too.
    whole = con.text()
    for never in p.never if p.host is Host.PASSIVE else _hostile_forbid(p):
        if re.search(never, whole):
            raise GuestVerdict(
                f"The transcript shows {never!r}, which must never show.",
                f"forbidden: {never}",
                con.tail(),
            )
    said = " ".join(whole.split())
    for wanted in p.shown:
        if not re.search(wanted, said):
            raise GuestVerdict(
                f"The console never showed {wanted!r}: the scenario's attack did not play "
                "out as it must for the verdict to mean anything.",
                "not played",
                con.tail(),
            )
    return proved


def _play_owner(
    p: Play,
    con: GuestIO,
    token: str,
    passphrase: Passphrase,
    wrong: Passphrase,
    timeout: float,
    exit_timeout: float,
    proof: Proof,
) -> str | None:
    for n, typed_right in enumerate(p.typed):
        con.expect_any({"prompt": PROMPT}, timeout, forbid=(p.marker, *p.never))
        # GRUB wraps its messages at the terminal width: compare with the lines joined.
        said = " ".join(con.text().split())
        if n == 0 and p.before_prompt and not re.search(p.before_prompt, said):
            raise GuestVerdict(
                f"GRUB prompted without first saying {p.before_prompt!r}: the secret "
                "path did not run as this scenario needs.",
                "protector silent",
                con.tail(),
            )
        con.sendline((passphrase if typed_right else wrong).typed())
    if p.ending is Ending.BOOTS:
        return _expect_marker(con, token, timeout, p, proof)
    if p.ending is Ending.WIPES:
        con.expect_any({"wiped": WIPED}, timeout, forbid=(p.marker, PROMPT, *p.never))
        return None
    con.expect_any({"give-up": GIVE_UP}, exit_timeout, forbid=(p.marker, PROMPT, *p.never))
    if not con.wait_exit(exit_timeout):
        raise GuestVerdict(
            "GRUB said it gives up but the guest did not reboot in time.", "timeout", con.tail()
        )
    if re.search(p.marker, con.text()):
        raise GuestVerdict("The guest booted with wrong passphrases.", "booted", con.tail())
    return None


def _expect_marker(con: GuestIO, token: str, timeout: float, p: Play, proof: Proof) -> str:
    _, m = con.expect_any({"marker": p.marker}, timeout, forbid=(PROMPT, *p.never))
    check_token(m.group(1), token)
    return proof.judge(con.text(), con.tail())


def await_report(con: GuestIO, timeout: float) -> GuestReport:
    """Once the marker is seen, the rest of its line, and the report of a guest that
    boots our kernel (:mod:`harness.guest.report`).

    Raises:
        GuestVerdict: the line does not end in time, or the report does not parse.
    """
    con.expect_any({"report": BOOTED_LINE_END}, timeout, forbid=(PROMPT,))
    try:
        return GuestReport.parse(con.text())
    except InputError as err:
        raise GuestVerdict(
            f"The guest's secret report is unusable: {err.message}", "report", con.tail()
        ) from err


def check_token(seen: str, token: str) -> None:
    if seen != token:
        raise GuestVerdict(f"Another image booted (token {seen}, expected {token}).", "token", "")


def _play_hostile(
    p: Play, con: GuestIO, token: str, typed: Passphrase, timeout: float, proof: Proof
) -> str | None:
    """The host's moves: type *typed* at every prompt, press keys at every menu (none
    for a host that waits)."""
    proved = None
    events = {
        "prompt": PROMPT,
        "menu": MENU,
        "any key": ANY_KEY,
        "marker": p.marker,
        "locked": CLI_LOCKED,
        "wiped": WIPED,
        "all failed": ALL_FAILED,
    }
    forbid = _hostile_forbid(p)
    keys = list(HOST_KEYS) if p.host is Host.CONSOLE_KEYS else []
    prompts = 0
    deadline = time.monotonic() + timeout
    waiting_for_key = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GuestVerdict(f"The guest did not finish within {timeout:g} s.", "timeout", "")
        try:
            name, m = con.expect_any(
                events, min(left, KEY_REACTION) if waiting_for_key else left, forbid
            )
        except GuestVerdict as verdict:
            if verdict.matched == "timeout" and waiting_for_key:
                waiting_for_key = False
                _press(con, keys)
                waiting_for_key = True
                continue
            if verdict.matched == "exited" and p.ending in (Ending.HALTS, Ending.STOPS):
                break
            raise
        waiting_for_key = False
        if name == "prompt":
            if p.ending is Ending.WIPES:  # the verdict is known: no answer needed
                raise GuestVerdict(
                    "GRUB asked for a passphrase although the owner's table is in the secret "
                    "area: the host could type the passphrase of a disk of its own.",
                    "prompted",
                    con.tail(),
                )
            prompts += 1
            con.sendline(typed.typed())
        elif p.host is Host.MENU_WAIT and name in ("any key", "menu"):
            continue  # the host lets GRUB wait
        elif name == "any key":
            con.send("\x1b")
        elif name == "menu":
            _press(con, keys)
            waiting_for_key = True
        elif name == "all failed":
            if p.ending not in (Ending.HALTS, Ending.STOPS):
                raise GuestVerdict(
                    "Every entry of GRUB's menu failed instead of booting.", "failed", con.tail()
                )
            break  # GRUB now waits for a key, as long as the host likes
        elif name == "marker":
            if p.ending not in (Ending.BOOTS, Ending.STOPS, Ending.UNPROVEN):
                raise GuestVerdict("The guest booted where it must stop.", "booted", con.tail())
            check_token(m.group(1), token)
            if p.ending is Ending.UNPROVEN:
                proved = _refuse_copy(con, proof)
                break
            proved = proof.judge(con.text(), con.tail())
            if p.ending is Ending.BOOTS:
                break
            # STOPS: the owner's image may finish; what follows is still judged.
            events.pop("marker")
        elif name == "wiped":
            if p.ending is not Ending.WIPES:
                raise GuestVerdict(
                    "GRUB wiped the secret area and powered off instead of booting.",
                    "wiped",
                    con.tail(),
                )
            break
        elif name == "locked":
            if p.ending not in (Ending.HALTS, Ending.STOPS):
                raise GuestVerdict(
                    "GRUB stopped with its CLI locked instead of booting.", "locked", con.tail()
                )
            break
    if prompts and p.host not in (Host.CONSOLE_KEYS, Host.KEY_SLOT, Host.IMPOSTOR):
        raise GuestVerdict(
            f"GRUB asked for a passphrase {prompts} time(s) after the secret unlocked the "
            "owner's root; the host answered with its own.",
            "prompted",
            con.tail(),
        )
    return proved


def _refuse_copy(con: GuestIO, proof: Proof) -> str:
    """The owner's marker from a guest that is not the owner's root: the proof must fail.

    Raises:
        GuestVerdict: the proof verified, so the judge took the copy for the owner's root.
    """
    try:
        proof.judge(con.text(), con.tail())
    except GuestVerdict as refused:
        return f"the host's copy of the owner's marker was refused: {refused.message}"
    raise GuestVerdict(
        "The judge took a copy of the owner's marker for the owner's root: the proof "
        "verified on a guest that booted the host's disk.",
        "impostor",
        con.tail(),
    )


def _hostile_forbid(p: Play) -> tuple[str, ...]:
    """What must never show while the host plays *p*."""
    # The impostor's own grub.cfg may run: the owner injected nothing it could reach.
    host_grub = () if p.host is Host.IMPOSTOR else (HOST_MARKER,)
    return (*host_grub, HOST_KERNEL, GRUB_SHELL, RESCUE_SHELL, EDITOR, OWNER_DATA,
            INITRAMFS_SHELL, *p.never)  # fmt: skip


def _press(con: GuestIO, keys: list[str]) -> None:
    """The next key the host presses at a menu; Enter (boot the default) once done."""
    con.send(keys.pop(0) if keys else "\r")


def check_wipe(page: bytes, injected: Passphrase, extras: Sequence[SecretEntry], tail: str) -> str:
    """Judge the secret page after the guest ran, like Linux's efi_secret would read it.

    *injected* is the passphrase the owner put in the table; *extras* the secrets beside
    it, which must survive.

    Raises:
        GuestVerdict: the passphrase is still there, its entry is not wiped as Linux
            expects (GUID and data zero, length kept), the extra secret is damaged, or
            the area no longer parses at all.
    """
    _require_page(page, tail)
    if injected.value in page:
        raise GuestVerdict("The passphrase is still in the secret page.", "secret left", tail)
    try:
        table = SecretTable.parse(page)
    except HarnessError as err:
        raise GuestVerdict(
            f"GRUB left a secret area Linux cannot parse: {err.message}", "corrupted", tail
        ) from err
    entry = next((e for e in table.entries if e.deleted), None)
    if entry is None or any(entry.data) or entry.length != len(injected.value) + 1 + 20:
        raise GuestVerdict(
            "The disk passphrase entry was not wiped as Linux expects "
            "(zero GUID and data, length kept).",
            "not wiped",
            tail,
        )
    if table.get(guids.DISK_PASSPHRASE_ENTRY) is not None:
        raise GuestVerdict("The disk passphrase entry is still live.", "not wiped", tail)
    for extra in extras:
        if table.get(extra.guid) != extra:
            raise GuestVerdict(
                f"The extra secret {extra.guid} beside the passphrase was damaged.",
                "damaged",
                tail,
            )
    return (
        "secret page after boot: passphrase entry wiped (GUID and data zero, length kept), "
        f"{len(extras)} extra secrets intact, passphrase bytes absent"
    )


def _require_page(page: bytes, tail: str) -> None:
    """Raises: GuestVerdict: the page read after the guest ran is empty."""
    if not page:
        raise GuestVerdict("The secret page could not be read after the boot.", "no page", tail)


def check_area_wiped(page: bytes, tail: str) -> str:
    """The secret page once GRUB gave up on the owner's table: every byte zero.

    Raises:
        GuestVerdict: the page could not be read, or something is left in it.
    """
    _require_page(page, tail)
    if any(page):
        left = sum(1 for b in page if b)
        raise GuestVerdict(
            f"GRUB gave up on the owner's table but left {left} non-zero bytes in the secret area.",
            "not wiped",
            tail,
        )
    return f"secret area after the guest stopped: all {len(page)} bytes zero"


def check_planted_page(page: bytes, passphrase: Passphrase, tail: str) -> str:
    """A planted page after the boot: whatever its shape, GRUB must have wiped every
    copy of the passphrase it held (a refused table is wiped whole).

    Raises:
        GuestVerdict: the page could not be read, or the passphrase is still in it.
    """
    _require_page(page, tail)
    if passphrase.value in page:
        raise GuestVerdict(
            "The passphrase is still in the planted secret page after GRUB refused it.",
            "secret left",
            tail,
        )
    return "planted page after boot: passphrase bytes absent"


def check_ram(found: Mapping[str, int], touched: int, tail: str) -> str:
    """Judge a search of all guest RAM, made once the guest is done: *found* counts the
    copies of each needle (name -> count: the passphrase, each half of a volume key);
    none may be left. *touched* is how many bytes of the RAM hold data at all.

    Raises:
        GuestVerdict: a needle was found (named, with how many copies), or the RAM holds
            too little to be a guest's that ran (the search looked at the wrong memory).
    """
    if not found:
        return "guest RAM: nothing to look for"
    if touched < MIN_TOUCHED:
        raise GuestVerdict(
            f"The guest's RAM holds only {touched} bytes of data: that is not the memory of "
            "a guest that ran, so its search proves nothing.",
            "no RAM",
            tail,
        )
    left = {name: n for name, n in found.items() if n}
    if left:
        what = ", ".join(f"{name} ({n} cop{'y' if n == 1 else 'ies'})" for name, n in left.items())
        raise GuestVerdict(
            f"Key material outlived its use: guest RAM still holds {what} once GRUB was "
            "done with it.",
            "key in RAM",
            tail,
        )
    return f"guest RAM ({touched >> 20} MiB touched) holds none of: {', '.join(found)}"


def read_page(
    pmemsave: Callable[[int, int, Path], bytes],
    base: int,
    size: int,
    dest: Path,
    timeout: float = PMEMSAVE_TIMEOUT,
) -> bytes:
    """Guest memory at *base* once QEMU can give it (it is busy while the guest stops)."""
    deadline = time.monotonic() + timeout
    page = b""
    while time.monotonic() < deadline:
        page = pmemsave(base, size, dest)
        if page:
            break
        time.sleep(0.2)
    return bytes(page)
