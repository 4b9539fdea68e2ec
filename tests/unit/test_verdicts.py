"""The verdicts against scripted fake guests: each verdict must fail for the right reason.

Every canned transcript below is what a broken or hostile guest would print; the real
Console and the real verdict code judge it.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from harness.boots import prepare, scenarios, verdicts
from harness.errors import GuestVerdict
from harness.passphrase import Passphrase
from harness.sev.secret import SecretEntry, SecretTable, disk_passphrase_entry
from tests.fakeguest import (
    HOST_PASSPHRASE,
    OWNER_PASSPHRASE,
    PROOF_LINE,
    WRONG_PASSPHRASE,
    Reaction,
    play_scenario,
    proof_line,
)

GOOD = OWNER_PASSPHRASE
WRONG = WRONG_PASSPHRASE
HOST = HOST_PASSPHRASE
TOKEN = "abc123"
BOOTED = f"Transferring to (crypto0)/boot/grub/grub.cfg\n{PROOF_LINE}HARNESS-BOOTED token={TOKEN}\n"
GRUB_START = "Entering grub config\n"
PROMPT_LINE = "Enter passphrase for hd0,gpt1 (1234): "
NO_TABLE = "error: EFI secret area holds no secret table.\n"
GIVE_UP = "Failed to find any grub configuration on the encrypted volume\n"


def judge(
    tmp_path: Path,
    name: str,
    opening: str,
    react: Reaction | None = None,
    *,
    exits: bool = True,
) -> list[str]:
    """Play scenario *name* against the script; returns what was typed."""
    return play_scenario(tmp_path, name, opening, react, token=TOKEN, exits=exits)[1].typed


def fails(tmp_path: Path, name: str, opening: str, react: Reaction | None = None) -> str:
    with pytest.raises(GuestVerdict) as err:
        judge(tmp_path, name, opening, react)
    return err.value.matched


def answers(*steps: tuple[str, str | None]) -> Reaction:
    """A guest that answers typed text containing steps[i][0] with steps[i][1], in order."""
    queue = list(steps)

    def react(typed: str) -> str | None:
        if queue and queue[0][0] in typed:
            return queue.pop(0)[1]
        return ""

    return react


# -- the owner's scenarios ------------------------------------------------------------


def test_passwordless_passes_on_a_clean_boot(tmp_path: Path) -> None:
    assert judge(tmp_path, "passwordless", GRUB_START + BOOTED) == []


def test_passwordless_fails_on_a_prompt(tmp_path: Path) -> None:
    assert "Enter passphrase" in fails(tmp_path, "passwordless", GRUB_START + PROMPT_LINE)


def test_a_missing_marker_fails(tmp_path: Path) -> None:
    assert fails(tmp_path, "passwordless", GRUB_START + "Transferring to ...\n") == "exited"


def test_another_images_token_fails(tmp_path: Path) -> None:
    assert fails(tmp_path, "passwordless", "HARNESS-BOOTED token=other\n") == "token"


def test_no_secret_needs_the_protectors_message_before_the_prompt(tmp_path: Path) -> None:
    react = answers(("owner-passphrase", BOOTED))
    assert judge(tmp_path, "no-secret", GRUB_START + NO_TABLE + PROMPT_LINE, react)
    silent = tmp_path / "silent"
    silent.mkdir()
    assert fails(silent, "no-secret", GRUB_START + PROMPT_LINE, react) == "protector silent"


WIPED = (
    "The owner's secret table opened no volume to boot from: wiping the secret area and "
    "powering off, no passphrase prompt\n"
)
NO_KEY = "error: no key protector provided a usable key for hd0,gpt1 (1234).\n"


def test_a_valid_table_that_opens_nothing_ends_wiped_without_a_prompt(tmp_path: Path) -> None:
    for name in ("wrong-secret", "reset-replay", "planted-duplicate-passphrase"):
        where = tmp_path / name
        where.mkdir()
        assert judge(where, name, GRUB_START + NO_KEY + WIPED) == []


def test_a_valid_table_that_leads_to_a_prompt_fails(tmp_path: Path) -> None:
    # What today's main did: the prompt, and the owner (here) or the host typing.
    react = answers(("owner-passphrase", BOOTED))
    assert fails(tmp_path, "wrong-secret", GRUB_START + NO_KEY + PROMPT_LINE, react) == (
        "forbidden: Enter passphrase for"
    )


def test_owner_disk_missing_fails_at_the_first_prompt(tmp_path: Path) -> None:
    """The verdict is known at the prompt: nothing is typed (today's main prompted, the
    host typed its own disk's passphrase and its grub.cfg ran)."""

    def react(typed: str) -> str | None:
        raise AssertionError(f"{typed!r} was typed after the verdict was known")

    opening = GRUB_START + NO_KEY + PROMPT_LINE
    assert fails(tmp_path, "owner-disk-missing", opening, react) == "prompted"


def test_a_broken_keyslot_fails_on_a_prompt_even_if_it_then_wipes(tmp_path: Path) -> None:
    react = answers(("wrong-passphrase", WIPED))
    assert fails(tmp_path, "keyslot-broken", GRUB_START + PROMPT_LINE, react) == "prompted"


def test_planted_pages_with_a_table_header_never_prompt() -> None:
    """The classification the planted scenarios take from the page bytes."""
    wipes = {n for n, s in scenarios.SCENARIOS.items() if s.ending is verdicts.Ending.WIPES}
    prompts = {n for n, s in scenarios.SCENARIOS.items() if s.name.startswith("planted-")} - wipes
    assert "planted-duplicate-secret-guid" in wipes and "planted-entry-len-zero" in wipes
    assert prompts == {
        "planted-wrong-header-guid",
        "planted-header-len-past-area",
        "planted-header-len-too-small",
        "planted-truncated-header",
        "planted-random-bytes",
        "planted-all-ff",
    }


def test_an_area_left_with_anything_in_it_is_not_wiped() -> None:
    assert "all 3072 bytes zero" in verdicts.check_area_wiped(bytes(3072), "")
    with pytest.raises(GuestVerdict) as err:
        verdicts.check_area_wiped(bytes(100) + b"\x01" + bytes(2971), "")
    assert err.value.matched == "not wiped"


def _refusal(after_third: str | None) -> Reaction:
    count = 0

    def react(typed: str) -> str | None:
        nonlocal count
        count += 1
        if count < 3:
            return "Invalid passphrase.\n" + PROMPT_LINE
        return after_third

    return react


def test_refusal_passes_on_grubs_give_up_path(tmp_path: Path) -> None:
    react = _refusal("error: access denied.\n" + GIVE_UP)
    assert (
        judge(tmp_path, "refusal", GRUB_START + NO_TABLE + PROMPT_LINE, react)
        == [WRONG.typed() + "\n"] * 3
    )


def test_refusal_fails_when_the_guest_crashes_after_the_third_prompt(tmp_path: Path) -> None:
    # QEMU dies: no give-up message, the guest is gone.
    matched = fails(tmp_path, "refusal", GRUB_START + NO_TABLE + PROMPT_LINE, _refusal(None))
    assert matched == "exited"


def test_refusal_fails_on_an_edk2_assert(tmp_path: Path) -> None:
    crash = "ASSERT /build/MdePkg/Library/Foo/Foo.c(12): FALSE\n"
    react = _refusal(crash + GIVE_UP)
    assert fails(tmp_path, "refusal", GRUB_START + NO_TABLE + PROMPT_LINE, react) == ("edk2 ASSERT")


def test_refusal_fails_when_qemu_aborts_on_the_way_out(tmp_path: Path) -> None:
    react = _refusal(GIVE_UP + "qemu-system-x86_64: ../hw/foo.c:1: Assertion `x' failed.\n")
    assert fails(tmp_path, "refusal", GRUB_START + NO_TABLE + PROMPT_LINE, react) == (
        "QEMU failure"
    )


def test_an_error_printed_mid_line_is_caught_at_the_end(tmp_path: Path) -> None:
    opening = GRUB_START + "Transferring to (crypto0)/grub.cfgerror: disk `x' not found.\n"
    assert fails(tmp_path, "passwordless", opening + BOOTED) == "GRUB error"


def test_an_error_after_the_last_wait_is_caught_at_the_end(tmp_path: Path) -> None:
    # The error is printed mid-line after the marker, where no wait looks at it.
    opening = GRUB_START + BOOTED + "[ 1.0] reboot: Power down error: out of memory.\n"
    assert fails(tmp_path, "passwordless", opening) == "GRUB error"


# -- the hostile host -----------------------------------------------------------------


def test_foreign_disk_passes_when_grub_never_prompts(tmp_path: Path) -> None:
    locked = "error: hd1,gpt1 (99) stays locked: no passphrase tries allowed.\n"
    opening = GRUB_START + "error: no key protector provided a usable key for hd1,gpt1.\n"
    assert judge(tmp_path, "foreign-disk", opening + locked + BOOTED) == []


def test_foreign_disk_fails_when_the_hosts_grub_cfg_runs(tmp_path: Path) -> None:
    # What today's main did before the fix: a prompt for the host's disk, its grub.cfg.
    react = answers(
        (
            "host-passphrase",
            "Transferring to (crypto1)/boot/grub/grub.cfg\n"
            "HOST-GRUB-CFG: the host's configuration runs\n(crypto1) (crypto0)\n",
        )
    )
    matched = fails(tmp_path, "foreign-disk", GRUB_START + PROMPT_LINE, react)
    assert "HOST-GRUB-CFG" in matched


def test_what_shows_after_the_verdicts_last_wait_is_judged_too(tmp_path: Path) -> None:
    """The play ends at the owner's marker; the host's kernel announcing itself after it
    is read by the final drain, and the whole transcript is searched once more."""
    opening = GRUB_START + BOOTED + HOST_KERNEL
    assert fails(tmp_path, "foreign-disk", opening).startswith("forbidden")


def test_foreign_disk_fails_on_any_prompt_even_if_the_owner_boots(tmp_path: Path) -> None:
    react = answers(("host-passphrase", BOOTED))
    assert fails(tmp_path, "foreign-disk", GRUB_START + PROMPT_LINE, react) == "prompted"


HOST_GRUB = (
    "Transferring to (crypto0)/boot/grub/grub.cfg\nHOST-GRUB-CFG: the host's configuration runs\n"
)
#: What the impostor's kernel prints: the owner's marker and an earlier boot's proof.
COPY = proof_line(mac="e1" * 32) + f"HARNESS-BOOTED token={TOKEN} root=/dev/mapper/root\n"


def test_the_impostors_copy_is_refused(tmp_path: Path) -> None:
    react = answers(("host-passphrase", HOST_GRUB + COPY))
    said, child = play_scenario(tmp_path, "impostor", GRUB_START + NO_TABLE + PROMPT_LINE, react,
                                token=TOKEN)  # fmt: skip
    assert child.typed == [HOST.typed() + "\n"]
    assert said is not None and "copy of the owner's marker was refused" in said


def test_the_impostor_fails_the_scenario_if_its_proof_verifies(tmp_path: Path) -> None:
    """What every owner verdict did before the proof: the token was all it asked for."""
    fooled = HOST_GRUB + PROOF_LINE + f"HARNESS-BOOTED token={TOKEN}\n"
    react = answers(("host-passphrase", fooled))
    assert fails(tmp_path, "impostor", GRUB_START + NO_TABLE + PROMPT_LINE, react) == "impostor"


def test_an_impostor_that_never_printed_the_marker_did_not_play(tmp_path: Path) -> None:
    react = answers(("host-passphrase", HOST_GRUB))
    assert fails(tmp_path, "impostor", GRUB_START + NO_TABLE + PROMPT_LINE, react) == "exited"


SEARCH_MISSED = "error: no such device: 0d5c2a3e-5b1f-4a47-9d0e-6a2b7c9e1f00.\n"
HOST_KERNEL = (
    "HOST-KERNEL-RUNS: the host's kernel runs in the owner's guest; secrets it can read: 3\n"
)


def test_search_hijack_passes_when_search_finds_nothing_and_the_guest_stops(
    tmp_path: Path,
) -> None:
    # Our kernel: the owner's kernel runs, its initramfs cannot mount the damaged root.
    failed = "HARNESS-INITRAMFS-FAILED /dev/mapper/root does not mount\n"
    assert judge(tmp_path, "search-hijack", GRUB_START + SEARCH_MISSED + failed) == []


def test_only_search_hijack_expects_the_initramfs_to_fail(tmp_path: Path) -> None:
    failed = "HARNESS-INITRAMFS-FAILED /dev/mapper/root does not mount\n"
    assert fails(tmp_path, "passwordless", GRUB_START + failed) == "the initramfs failing"


def test_search_hijack_passes_when_the_owners_image_finishes(tmp_path: Path) -> None:
    # Debian's kernel: the owner's busybox initramfs never reads the root and finishes.
    assert judge(tmp_path, "search-hijack", GRUB_START + SEARCH_MISSED + BOOTED) == []


def test_search_hijack_fails_when_the_hosts_kernel_runs(tmp_path: Path) -> None:
    # What today's main did: search found the host's filesystem, the host's kernel ran.
    opening = GRUB_START + "harness: loading the kernel from the encrypted root\n"
    assert "HOST-KERNEL-RUNS" in fails(tmp_path, "search-hijack", opening + HOST_KERNEL)


def test_search_hijack_fails_when_the_attack_did_not_play(tmp_path: Path) -> None:
    # The hint still matched (the UUID was not garbled): nothing bad showed, but the
    # verdict would mean nothing.
    assert fails(tmp_path, "search-hijack", GRUB_START + BOOTED) == "not played"


def test_search_hijack_fails_on_a_prompt(tmp_path: Path) -> None:
    react = answers(("wrong-passphrase", SEARCH_MISSED + BOOTED))
    assert fails(tmp_path, "search-hijack", GRUB_START + PROMPT_LINE, react) == "prompted"


def test_search_hijack_fails_on_another_images_marker(tmp_path: Path) -> None:
    other = "HARNESS-BOOTED token=f00f00\n"
    assert fails(tmp_path, "search-hijack", GRUB_START + SEARCH_MISSED + other) == "token"


MENU = "Use the ^ and v keys to select which entry is highlighted.\n"
LOCK_PROMPT = "Enter passphrase for hd0,gpt1 (1234): "
DENIED = "error: access denied.\nPress any key to continue...\n"


def _menu_guest(on_c: str, on_e: str) -> Reaction:
    def react(typed: str) -> str | None:
        if typed == "c":
            return on_c
        if typed == "e":
            return on_e
        if typed == WRONG.typed() + "\n":
            return DENIED
        if typed == "\x1b":
            return MENU if typed else ""
        if typed == "\r":
            return BOOTED
        return ""

    return react


def test_console_keys_pass_when_grub_asks_for_the_passphrase(tmp_path: Path) -> None:
    typed = judge(
        tmp_path, "console-keys", GRUB_START + MENU, _menu_guest(LOCK_PROMPT, LOCK_PROMPT)
    )
    assert typed[:3] == ["c", WRONG.typed() + "\n", "\x1b"]
    assert typed[-1] == "\r"


def test_console_keys_fail_on_a_command_line(tmp_path: Path) -> None:
    matched = fails(tmp_path, "console-keys", GRUB_START + MENU, _menu_guest("grub> ", ""))
    assert "grub>" in matched


def test_console_keys_fail_on_the_menu_editor(tmp_path: Path) -> None:
    editor = "Minimum Emacs-like screen editing is supported.\n"
    matched = fails(tmp_path, "console-keys", GRUB_START + MENU, _menu_guest(LOCK_PROMPT, editor))
    assert "Emacs" in matched


def test_console_keys_fail_when_the_owners_kernel_line_shows(tmp_path: Path) -> None:
    line = "linux /boot/vmlinuz console=ttyS0 harness.token=abc123\n"
    matched = fails(tmp_path, "console-keys", GRUB_START + MENU, _menu_guest(LOCK_PROMPT, line))
    assert "harness" in matched


def test_broken_kernel_passes_when_grub_stops_locked(tmp_path: Path) -> None:
    opening = GRUB_START + "error: file `/boot/vmlinuz-missing' not found.\n" + LOCK_PROMPT
    react = answers(("wrong", DENIED), ("\x1b", "Rescue mode has been disabled...\n"))
    judge(tmp_path, "broken-kernel", opening, react)


def test_broken_kernel_fails_on_a_shell(tmp_path: Path) -> None:
    opening = GRUB_START + "error: file `/boot/vmlinuz-missing' not found.\ngrub> "
    assert "grub>" in fails(tmp_path, "broken-kernel", opening)


def test_broken_kernel_fails_on_the_rescue_shell(tmp_path: Path) -> None:
    opening = GRUB_START + "Entering rescue mode...\ngrub rescue> "
    assert fails(tmp_path, "broken-kernel", opening) == "GRUB rescue shell"


FAILED_ALL = (
    "error: file `/boot/vmlinuz-missing' not found.\n"
    "Press any key to continue...\n"
    "  Failed to boot both default and fallback entries.\n"
    "Press any key to continue...\n"
)


def test_stalled_menu_passes_when_every_entry_failed_and_nothing_was_pressed(
    tmp_path: Path,
) -> None:
    """The host lets the menu and "Press any key" wait: not one key is sent, and the
    verdict is left to the RAM search once GRUB said every entry failed."""
    assert judge(tmp_path, "stalled-menu", GRUB_START + MENU + FAILED_ALL, exits=False) == []


def test_stalled_menu_fails_when_the_owners_image_boots(tmp_path: Path) -> None:
    assert fails(tmp_path, "stalled-menu", GRUB_START + MENU + BOOTED) == "booted"


def test_every_entry_failing_is_a_verdict_where_the_image_must_boot(tmp_path: Path) -> None:
    react = _menu_guest(LOCK_PROMPT, LOCK_PROMPT)
    assert fails(tmp_path, "console-keys", GRUB_START + FAILED_ALL, react) == "failed"


# -- the wipe, judged on a fake pmemsave page ----------------------------------------

EXTRA = (
    SecretEntry(uuid.UUID("b2f94a13-42c5-4f6c-9d6b-6c4f7e1a0c55"), b"harness extra secret"),
    SecretEntry(uuid.UUID("5e0b7c2d-8a41-4f39-b6d2-0c9e1f7a3b84"), b"a second one"),
)
AREA = 0xC00


def _page(passphrase: Passphrase, wipe: str = "linux") -> bytes:
    """A table as GRUB would leave it: *wipe* says how the passphrase entry was treated."""
    entry = disk_passphrase_entry(passphrase.value)
    table = SecretTable((entry, *EXTRA)).serialize(AREA)
    page = bytearray(table)
    at = 16 + 4  # the first entry, right after the table header
    length = struct.unpack_from("<I", page, at + 16)[0]
    if wipe in ("linux", "zero-len"):
        page[at : at + 16] = bytes(16)
        page[at + 20 : at + length] = bytes(length - 20)
    if wipe == "zero-len":
        struct.pack_into("<I", page, at + 16, 0)
    if wipe == "guid-only":
        page[at : at + 16] = bytes(16)
    if wipe in ("damage-extra", "damage-last"):
        page[at : at + 16] = bytes(16)
        page[at + 20 : at + length] = bytes(length - 20)
        last = at + length + EXTRA[0].length if wipe == "damage-last" else at + length
        page[last + 20] ^= 0xFF
    return bytes(page)


def test_a_linux_style_wipe_passes() -> None:
    assert "wiped" in verdicts.check_wipe(_page(GOOD), GOOD, EXTRA, "")


@pytest.mark.parametrize(
    "wipe, matched",
    [
        ("none", "secret left"),
        ("guid-only", "secret left"),
        ("zero-len", "corrupted"),
        ("damage-extra", "damaged"),
        ("damage-last", "damaged"),
    ],
)
def test_a_bad_wipe_fails(wipe: str, matched: str) -> None:
    with pytest.raises(GuestVerdict) as err:
        verdicts.check_wipe(_page(GOOD, wipe), GOOD, EXTRA, "")
    assert err.value.matched == matched


def test_a_live_passphrase_entry_fails_even_without_the_bytes() -> None:
    # GUID kept, data zeroed: the bytes are gone but Linux would still list the entry.
    page = bytearray(_page(GOOD, "none"))
    at = 16 + 4
    length = struct.unpack_from("<I", page, at + 16)[0]
    page[at + 20 : at + length] = bytes(length - 20)
    with pytest.raises(GuestVerdict) as err:
        verdicts.check_wipe(bytes(page), GOOD, EXTRA, "")
    assert err.value.matched == "not wiped"


def test_a_corrupted_area_is_a_verdict_not_an_exception() -> None:
    with pytest.raises(GuestVerdict) as err:
        verdicts.check_wipe(b"\xff" * AREA, GOOD, EXTRA, "")
    assert err.value.matched == "corrupted"


def test_an_unreadable_page_is_a_verdict() -> None:
    with pytest.raises(GuestVerdict):
        verdicts.check_wipe(b"", GOOD, EXTRA, "")


def test_read_page_retries_until_qemu_answers(tmp_path: Path) -> None:
    answers_ = [b"", b"", b"page"]
    assert verdicts.read_page(lambda *_: answers_.pop(0), 0, 4, tmp_path / "p") == b"page"


def test_the_owner_refuses_a_tampered_firmware(tmp_path: Path) -> None:
    """The owner's side of tampered-firmware: the digest differs, nothing is injected."""
    from harness.sev.measure import launch_digest

    fw = bytes(range(256)) * 64
    scenario = scenarios.SCENARIOS["tampered-firmware"]
    notes: list[str] = []
    tampered = fw[:-1] + bytes([fw[-1] ^ 1])
    plain = SecretTable((disk_passphrase_entry(GOOD.value),)).serialize()
    secret = prepare._launch(scenario, tampered, launch_digest(fw), GOOD, plain, notes)
    assert secret is None
    assert len(notes) == 1
    assert notes[0].startswith("guest owner refused: the launch measurement does not match")


# -- guest RAM after the handover -----------------------------------------------------


def test_ram_without_key_material_passes() -> None:
    found = {"the passphrase": 0, "first half": 0, "second half": 0}
    said = verdicts.check_ram(found, 40 << 20, "")
    assert (
        said == "guest RAM (40 MiB touched) holds none of: the passphrase, first half, second half"
    )


@pytest.mark.parametrize("where", ["the passphrase", "second half"])
def test_ram_with_key_material_fails_and_counts_it(where: str) -> None:
    found = {"the passphrase": 0, "first half": 0, "second half": 0} | {where: 2}
    with pytest.raises(GuestVerdict) as err:
        verdicts.check_ram(found, 40 << 20, "")
    assert err.value.matched == "key in RAM"
    assert f"{where} (2 copies)" in str(err.value)


def test_ram_that_no_guest_ran_in_is_a_verdict() -> None:
    """A search of memory QEMU never used (the backend not wired) finds nothing: that
    must not pass as clean."""
    with pytest.raises(GuestVerdict) as err:
        verdicts.check_ram({"the passphrase": 0}, 4096, "")
    assert err.value.matched == "no RAM"


def test_a_planted_page_must_lose_its_passphrase() -> None:
    assert "absent" in verdicts.check_planted_page(b"\0" * 64, GOOD, "")
    with pytest.raises(GuestVerdict) as err:
        verdicts.check_planted_page(b"\0" * 8 + GOOD.value + b"\0", GOOD, "")
    assert err.value.matched == "secret left"
    with pytest.raises(GuestVerdict):
        verdicts.check_planted_page(b"", GOOD, "")
