"""Our GRUB for arm64 booted on arm64 UEFI firmware: Debian's AAVMF (edk2 ArmVirtQemu)
under ``qemu-system-aarch64`` with TCG.

What it proves that the arm64 unit test under qemu-user does not: the efisecret module,
built for arm64-efi, loads in a real arm64 firmware and looks the secret area up in that
firmware's EFI configuration tables; a firmware that publishes none (AAVMF, like any
arm64 firmware outside an Arm CCA Realm) gets the fallback, and with
``cryptodisk_passphrase_tries=0`` the owner's disk stays locked, with no prompt a host
could answer.

What it cannot prove here: the planted-table path. On arm64 only the Arm CCA Realm
firmware fills the table (edk2 ArmVirtPkg's Boot Sync driver, edk2 pull request 12625),
after attestation, inside a Realm, which needs an RMM that TCG does not emulate. The table
it writes is checked byte for byte by efisecret_unit_test (patches/grub 0017), on aarch64.
"""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import run
from harness.boots.scenarios import LOCKED_ERRORS
from harness.components.grub import GrubManifest
from harness.components.pipeline import Built
from harness.errors import GuestVerdict
from harness.host import console
from harness.verdict import Verdict

AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
QEMU = "qemu-system-aarch64"
#: What the image needs to find its grub.cfg on the ESP and to try the protector.
MODULES = (
    "efisecret", "cryptodisk", "luks", "luks2", "pbkdf2", "gcry_sha256", "gcry_rijndael",
    "part_gpt", "fat", "normal", "echo", "halt", "test", "search", "search_fs_file",
)  # fmt: skip
EMBEDDED = """\
search --no-floppy --file --set=root /EFI/BOOT/grub.cfg
normal /EFI/BOOT/grub.cfg
"""
NO_TABLE = "harness: arm64 GRUB found no secret table"
TABLE = "harness: arm64 GRUB found a secret table"
DONE = "harness: arm64 GRUB done"
CONFIG = f"""\
if efisecret --present; then echo "{TABLE}"; else echo "{NO_TABLE}"; fi
set cryptodisk_passphrase_tries=0
cryptomount -a -P efisecret
echo "{DONE}"
halt
"""
#: What GRUB prints on the way, by design: the firmware has no area, the protector
#: unlocks nothing, and with no tries the volume stays locked.
ALLOWED_ERRORS = (
    r"publishes no EFI secret area",
    r"no key protector provided a usable key",
    *LOCKED_ERRORS,
)
TIMEOUT = 300.0


@dataclass(frozen=True)
class Arm64Boot:
    outcome: Verdict
    detail: str
    transcript: Path


def boot_without_table(mkimage: Path, modules: Path, work: Path) -> Arm64Boot:
    """Boot GRUB's arm64-efi *modules* (made into an image by *mkimage*, any host's
    grub-mkimage) on AAVMF beside a LUKS disk no one can unlock, and judge it: no table
    found, the protector's fallback, the disk kept locked, no prompt.

    Raises:
        CommandError: the image, the ESP or the LUKS disk could not be made.
    """
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "embedded.cfg").write_text(EMBEDDED)
    (work / "grub.cfg").write_text(CONFIG)
    efi = work / "BOOTAA64.EFI"
    run.run(
        [str(mkimage), "-O", "arm64-efi", "-d", str(modules), "-o", str(efi),
         "-p", "/EFI/BOOT", "-c", str(work / "embedded.cfg"), *MODULES],
    )  # fmt: skip
    esp = work / "esp.img"
    with open(esp, "wb") as f:
        f.truncate(32 << 20)
    run.run(["mkfs.fat", "-n", "ESP", str(esp)])
    run.run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"])
    run.run(["mcopy", "-i", str(esp), str(efi), str(work / "grub.cfg"), "::/EFI/BOOT/"])
    # The owner's disk, locked with a passphrase nobody is given: whatever unlocks it
    # here unlocked it without the passphrase.
    luks = work / "luks.img"
    with open(luks, "wb") as f:
        f.truncate(16 << 20)
    passphrase = secrets.token_hex(16).encode()
    run.run(
        ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", "-", str(luks)],
        input=passphrase,
    )  # fmt: skip
    variables = work / "vars.fd"
    shutil.copyfile(AAVMF_VARS, variables)
    argv = [
        QEMU, "-M", "virt", "-cpu", "cortex-a57", "-m", "512", "-accel", "tcg",
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-drive", f"if=pflash,format=raw,readonly=on,file={AAVMF_CODE}",
        "-drive", f"if=pflash,format=raw,file={variables}",
        "-drive", f"if=virtio,format=raw,file={esp}",
        "-drive", f"if=virtio,format=raw,file={luks}",
    ]  # fmt: skip
    transcript = work / "console.log"
    return judge(console.spawn(argv, transcript, (passphrase,), ALLOWED_ERRORS))


def judge(con: console.Console) -> Arm64Boot:
    """Watch *con* (the boot, or a scripted fake of it) to the end and judge it; it is
    closed afterwards."""
    try:
        forbid = (TABLE, r"Enter passphrase")
        con.expect(NO_TABLE, TIMEOUT, forbid)
        con.expect(DONE, TIMEOUT, forbid)
        con.wait_exit(TIMEOUT)
        con.check_transcript()
    except GuestVerdict as verdict:
        return Arm64Boot(Verdict.FAILED, verdict.message, con.transcript)
    finally:
        con.close()
    # GRUB wraps mid-word at the terminal's width: read the lines as one.
    if not any(re.search(p, "".join(con.text().splitlines())) for p in LOCKED_ERRORS):
        return Arm64Boot(Verdict.FAILED, "GRUB never said the disk stays locked", con.transcript)
    return Arm64Boot(
        Verdict.PASSED,
        "no secret table on AAVMF: the protector fell back and the disk stayed locked, "
        "with no prompt",
        con.transcript,
    )


def boot_build(x86: Path, arm: Built[GrubManifest], work: Path) -> Arm64Boot:
    """:func:`boot_without_table` with the image made by the grub-mkimage of an x86_64
    GRUB install tree *x86* (a published GRUB build: it runs here, and grub-mkimage
    makes images for any target) from the modules of the arm64 build *arm*."""
    out = arm.manifest.output
    modules = arm.entry / out.prefix.lstrip("/") / out.modules_dir
    return boot_without_table(x86 / out.mkimage, modules, work)
