"""The judge of the arm64 GRUB boot on AAVMF, against scripted guests: a program that
prints what GRUB would and exits, watched by the real console (no QEMU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.boots import arm64
from harness.host import console
from harness.verdict import Verdict

pytestmark = pytest.mark.unit

#: What the real boot printed (pinned GRUB 2.14 with our series, Debian's AAVMF).
BOOTED = f"""\
BdsDxe: starting Boot0001 "UEFI Non-Block Boot Device" from PciRoot(0x0)/Pci(0x2,0x0)
{arm64.NO_TABLE}
error: /src/grub-core/commands/efi/efisecret.c:find_area:63:the firmware
publishes no EFI secret area.
error:
/src/grub-core/disk/cryptodisk.c:grub_cryptodisk_scan_device_real:1271:no key
protector provided a usable key for hd1 (c0ac20d2-0dda-43dc-8b41-26466c08750b).
error:
/src/grub-core/disk/cryptodisk.c:grub_cryptodisk_scan_device_real:1336:hd1
(c0ac20d2-0dda-43dc-8b41-26466c08750b) stays locked: no passphrase tries
allowed.
{arm64.DONE}
"""


#: The last error of BOOTED: the disk kept locked.
LOCKED_ERROR = BOOTED[BOOTED.rindex("error:") : BOOTED.index(arm64.DONE)]


def judged(tmp_path: Path, text: str) -> arm64.Arm64Boot:
    script = tmp_path / "guest.py"
    script.write_text(f"import sys\nsys.stdout.write({text!r})\nsys.stdout.flush()\n")
    con = console.spawn(
        [sys.executable, str(script)], tmp_path / "console.log", (), arm64.ALLOWED_ERRORS
    )
    return arm64.judge(con)


def test_the_real_boot_passes(tmp_path: Path) -> None:
    assert judged(tmp_path, BOOTED).outcome is Verdict.PASSED


def test_upstreams_words_wrapped_mid_word_pass(tmp_path: Path) -> None:
    master = BOOTED.replace(
        "1336:hd1\n(c0ac20d2-0dda-43dc-8b41-26466c08750b) stays locked: no passphrase tries\n"
        "allowed.",
        "1331:passphra\nse prompting is disabled.",
    )
    assert "stays locked" not in master
    assert judged(tmp_path, master).outcome is Verdict.PASSED


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ((arm64.NO_TABLE, arm64.TABLE), "harness: arm64 GRUB found a secret table"),
        (("allowed.\n", "allowed.\nEnter passphrase for hd1: "), "Enter passphrase"),
        ((LOCKED_ERROR, ""), "never said"),
        (("publishes no EFI secret area.", "ran out of memory."), "does not expect"),
        ((arm64.DONE, "harness: arm64 GRUB stopped"), "exited"),
    ],
    ids=["a table", "a prompt", "not locked", "another error", "never done"],
)
def test_what_fails_the_boot(tmp_path: Path, change: tuple[str, str], said: str) -> None:
    boot = judged(tmp_path, BOOTED.replace(*change))
    assert boot.outcome is Verdict.FAILED and said in boot.detail, boot.detail
