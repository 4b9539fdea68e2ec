"""The Debian recipe's parts that need no container or VM: its options, its recipe file,
the judge of the assembly VM's console, and the verdicts on a guest that shows it booted
with a login prompt (scripted fake guests, the real Console and verdict code)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import run
from harness.boots import scenarios, verdicts
from harness.config import RECIPES
from harness.errors import ConfigError, GuestVerdict, InputError, VerificationError
from harness.guest import debian, debpkgs, imagemeta, rootfs
from harness.guest.imagemeta import DiskFormat, Ready
from tests.fakeguest import OWNER_PASSPHRASE, PROOF_LINE, Reaction, play_scenario

pytestmark = pytest.mark.unit

GOOD = OWNER_PASSPHRASE
TOKEN = "0123456789abcdef"
GRUB_START = "Entering grub config\n"
BLI = (
    "error: /src/grub-core/commands/bli.c:set_loader_device_part_uuid:115:unable to\n"
    "find boot device.\n"
)
DEBIAN_GRUB = "Transferring to (crypto0)/boot/grub/grub.cfg\n  Booting `Debian GNU/Linux'\n"
LOGIN = f"{PROOF_LINE}\nDebian GNU/Linux 13 harness-{TOKEN} ttyS0\n\nharness-{TOKEN} login: "
PROMPT_LINE = "Enter passphrase for hd0,gpt2 (1234): "
NO_TABLE = "error: EFI secret area holds no secret table.\n"
INITRAMFS_PROMPT = "Please unlock disk root: "


def judge(tmp_path: Path, name: str, opening: str, react: Reaction | None = None) -> list[str]:
    play = scenarios.play_on(scenarios.SCENARIOS[name], Ready.LOGIN)
    return play_scenario(tmp_path, name, opening, react, token=TOKEN, play=play, host_typed=None)[
        1
    ].typed


def fails(tmp_path: Path, name: str, opening: str, react: Reaction | None = None) -> str:
    with pytest.raises(GuestVerdict) as err:
        judge(tmp_path, name, opening, react)
    return err.value.matched


def after(expected: str, output: str) -> Reaction:
    def react(typed: str) -> str:
        return output if expected in typed else ""

    return react


# -- a guest that shows it booted by its login prompt ------------------------------------


def test_passwordless_reaches_the_login_prompt(tmp_path: Path) -> None:
    assert judge(tmp_path, "passwordless", BLI + GRUB_START + DEBIAN_GRUB + LOGIN) == []


def test_the_initramfs_asking_for_the_passphrase_fails_passwordless(tmp_path: Path) -> None:
    opening = BLI + GRUB_START + DEBIAN_GRUB + INITRAMFS_PROMPT
    assert fails(tmp_path, "passwordless", opening).startswith("forbidden")


def test_the_harness_marker_is_no_login_prompt(tmp_path: Path) -> None:
    opening = GRUB_START + DEBIAN_GRUB + f"HARNESS-BOOTED token={TOKEN}\n"
    assert fails(tmp_path, "passwordless", opening) in ("timeout", "exited")


def test_another_images_login_prompt_fails(tmp_path: Path) -> None:
    opening = GRUB_START + DEBIAN_GRUB + "harness-fedcba9876543210 login: "
    assert fails(tmp_path, "passwordless", opening) == "token"


def test_no_secret_types_once_then_logs_in(tmp_path: Path) -> None:
    opening = BLI + GRUB_START + NO_TABLE + PROMPT_LINE
    typed = judge(tmp_path, "no-secret", opening, after(GOOD.typed(), DEBIAN_GRUB + LOGIN))
    assert typed == [GOOD.typed() + "\n"]


def test_no_secret_with_a_second_prompt_fails(tmp_path: Path) -> None:
    opening = GRUB_START + NO_TABLE + PROMPT_LINE
    react = after(GOOD.typed(), DEBIAN_GRUB + INITRAMFS_PROMPT)
    assert fails(tmp_path, "no-secret", opening, react).startswith("forbidden")


def test_a_module_of_another_grub_is_an_error(tmp_path: Path) -> None:
    """What GRUB 2.12's bli.mod printed under GRUB 2.14 (patches/ovmf/0003)."""
    garbage = "error: unable to find boot device:I?`a(>:2:.\n"
    assert fails(tmp_path, "passwordless", GRUB_START + garbage + DEBIAN_GRUB + LOGIN) == (
        "GRUB error"
    )


def test_the_login_play_keeps_the_scenario() -> None:
    for scenario in scenarios.SCENARIOS.values():
        play = scenarios.play_on(scenario, Ready.LOGIN)
        assert (play.ending, play.typed, play.host) == (
            scenario.ending,
            scenario.typed,
            scenario.host,
        )
        assert play.marker == verdicts.LOGIN and play.never == (verdicts.INITRAMFS_PROMPT,)
        assert scenarios.play_on(scenario, Ready.MARKER) == scenario.play


def test_owner_scenarios_take_the_debian_image() -> None:
    assert scenarios.SCENARIOS["passwordless"].takes("debian")
    assert scenarios.SCENARIOS["no-secret"].takes("minimal")
    assert not scenarios.SCENARIOS["console-keys"].takes("debian")


# -- the assembly VM's console ---------------------------------------------------------


def test_assembly_judge(tmp_path: Path) -> None:
    log = tmp_path / "assembly.log"
    debian.judge_assembly("harness: update-grub\nHARNESS-ASSEMBLY-OK\r\n", 0, log)
    with pytest.raises(VerificationError, match="failed at grub-install"):
        debian.judge_assembly("HARNESS-ASSEMBLY-FAILED grub-install\nreboot\n", 0, log)
    with pytest.raises(VerificationError, match="without finishing"):
        debian.judge_assembly("harness: update-initramfs -u -k all\n", 1, log)
    # Said mid-line (a program echoing it) is not the VM's own last word.
    with pytest.raises(VerificationError, match="without finishing"):
        debian.judge_assembly("echo HARNESS-ASSEMBLY-OK\n", 0, log)


# -- options -----------------------------------------------------------------------------


def test_sizes() -> None:
    assert debian.parse_size("2G") == 2048
    assert debian.parse_size("1536M") == 1536
    assert debian.parse_size("3GiB") == 3072
    assert debian.parse_size("1024") == 1024
    for bad in ("", "2T", "-1G", "big", "512M"):
        with pytest.raises(ConfigError):
            debian.parse_size(bad)


def test_package_names_reach_no_shell() -> None:
    assert debian.parse_packages("vim, openssh-server,libc6-dev") == (
        "vim",
        "openssh-server",
        "libc6-dev",
    )
    assert debian.parse_packages("") == ()
    for bad in ("vim;reboot", "a b", "$(id)", "Vim", "-x"):
        with pytest.raises(ConfigError):
            debian.parse_packages(bad)


def test_format_and_suite() -> None:
    assert debian.parse_format("qcow2") is DiskFormat.QCOW2
    with pytest.raises(ConfigError):
        debian.parse_format("vmdk")
    recipe = debian.DebianRecipe.load("debian")
    assert recipe is not None
    assert debian.pick_suite(recipe, None) == "trixie"
    assert debian.pick_suite(recipe, "bookworm") == "bookworm"
    with pytest.raises(ConfigError, match="sid"):
        debian.pick_suite(recipe, "sid")


def test_recipes_know_their_kind() -> None:
    assert debian.DebianRecipe.load("minimal") is None
    assert debian.DebianRecipe.load("no-such-recipe") is None
    with pytest.raises(ConfigError, match="debian recipe"):
        imagemeta.Recipe.load("debian")
    recipe = debian.DebianRecipe.load("debian")
    assert recipe is not None
    for name in ("make-root", "assemble-init"):
        assert recipe.file(name).is_file()
    assert "cryptsetup-initramfs" in recipe.packages


def test_root_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b"s3cret\n")
    path.chmod(0o600)
    assert debian.root_password(path) == b"s3cret"
    path.chmod(0o644)
    with pytest.raises(InputError, match="readable by group or others"):
        debian.root_password(path)
    for bad in (b"", b"\n", b"two\nlines\n", b"a\0b"):
        path.write_bytes(bad)
        path.chmod(0o600)
        with pytest.raises(InputError):
            debian.root_password(path)


def test_ssh_key_file(tmp_path: Path) -> None:
    path = tmp_path / "id.pub"
    path.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4= owner@example")
    assert debian.ssh_key(path).endswith(b"owner@example\n")
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n")
    with pytest.raises(InputError, match="private key"):
        debian.ssh_key(path)
    path.write_text("not a key\n")
    with pytest.raises(InputError):
        debian.ssh_key(path)
    with pytest.raises(InputError):
        debian.ssh_key(tmp_path / "missing.pub")


def test_image_json_of_a_debian_image_round_trips(tmp_path: Path) -> None:
    meta = imagemeta.ImageMetadata(
        variant=imagemeta.LuksVariant.LUKS2_PBKDF2,
        token=TOKEN,
        recipe="debian",
        partition_start=65 * 1024 * 1024,
        ready=Ready.LOGIN,
        suite="trixie",
        disk_format=DiskFormat.QCOW2,
    )
    meta.dump(tmp_path / "image.json")
    img = imagemeta.load(tmp_path)
    assert img.metadata == meta
    assert img.disk == tmp_path / "disk.qcow2"
    assert os.path.basename(img.disk) == DiskFormat.QCOW2.file_name


# -- the host that breaks the key file's slot ----------------------------------------------

UNLOCKED = GRUB_START + "Slot 0 opened\n" + DEBIAN_GRUB
GAVE_UP = (
    "cryptsetup: ERROR: root: maximum number of tries exceeded\n"
    "Gave up waiting for root file system device.\n"
    "ALERT!  /dev/mapper/root does not exist.  Dropping to a shell!\n"
)


def test_the_initramfs_shell_on_the_hosts_console_fails(tmp_path: Path) -> None:
    shell = "\nBusyBox v1.37.0 (Debian 1:1.37.0-6+b9) built-in shell (ash)\n(initramfs) "
    assert fails(tmp_path, "broken-keyslot", UNLOCKED + GAVE_UP + shell).startswith("forbidden")


def test_the_bare_initramfs_prompt_alone_is_a_shell(tmp_path: Path) -> None:
    assert fails(tmp_path, "broken-keyslot", UNLOCKED + "(initramfs) ").startswith("forbidden")


def test_an_initramfs_that_reboots_passes(tmp_path: Path) -> None:
    reboot = GAVE_UP.replace("Dropping to a shell!", "") + (
        "Rebooting automatically due to panic= boot argument\n"
    )
    assert judge(tmp_path, "broken-keyslot", UNLOCKED + reboot) == []


def test_booting_to_login_with_a_dead_key_slot_fails(tmp_path: Path) -> None:
    assert fails(tmp_path, "broken-keyslot", UNLOCKED + LOGIN) == "booted"


def test_the_initramfs_prompt_fails_the_broken_key_slot(tmp_path: Path) -> None:
    opening = UNLOCKED + INITRAMFS_PROMPT
    assert fails(tmp_path, "broken-keyslot", opening).startswith("forbidden")


def test_a_failed_build_keeps_the_previous_image_and_its_own_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages that need a container are scripted: the root stage writes its log and
    fails as the assembly VM would. Nothing of the failed build but its logs lands."""
    out = tmp_path / "image"
    out.mkdir()
    for name, data in (("disk.img", b"old disk"), ("image.json", b"{}"), ("passphrase", b"p")):
        (out / name).write_bytes(data)
    unlock = tmp_path / "unlock"
    unlock.mkdir()
    (unlock / debpkgs.CLOSURE_FILES).write_text("")
    busybox = tmp_path / "busybox" / "bin"
    busybox.mkdir(parents=True)
    (busybox / "busybox").write_bytes(b"\x7fELF")
    monkeypatch.setattr(debpkgs, "fetch_packages", lambda *a: busybox.parent)
    monkeypatch.setattr(debpkgs, "fetch_unlock_tools", lambda *a: unlock)

    def failing_root(*args: object) -> Path:
        log_path = args[-1]
        assert isinstance(log_path, Path)
        log_path.write_text("I: running apt-get update...\nE: the mirror said no\n")
        raise VerificationError("scripted failure")

    monkeypatch.setattr(debian, "make_root", failing_root)
    recipe = debian.DebianRecipe.load("debian")
    assert recipe is not None
    kernel = rootfs.BuiltKernel(tmp_path / "bzImage", "6.12")
    with pytest.raises(VerificationError, match="scripted"):
        debian.build(recipe, imagemeta.LuksVariant.LUKS1, out, debian.DebianOptions(),
                     cache=tmp_path, builder="b", tools_builder="t", kernel=kernel)  # fmt: skip
    assert (out / "disk.img").read_bytes() == b"old disk"
    assert (out / "passphrase").read_bytes() == b"p"
    assert "the mirror said no" in (out / "failed-build.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "disk.img", "failed-build.log", "image.json", "passphrase",
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # A directory that holds something else is never an image directory to replace.
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(ConfigError, match="holds no image"):
        debian.build(recipe, imagemeta.LuksVariant.LUKS1, other, debian.DebianOptions(),
                     cache=tmp_path, builder="b", tools_builder="t", kernel=kernel)  # fmt: skip
    assert (other / "cat.jpg").read_bytes() == b"meow"
    # A directory a failed first build left (its logs only) is taken again.
    first = tmp_path / "first"
    with pytest.raises(VerificationError, match="scripted"):
        debian.build(recipe, imagemeta.LuksVariant.LUKS1, first, debian.DebianOptions(),
                     cache=tmp_path, builder="b", tools_builder="t", kernel=kernel)  # fmt: skip
    with pytest.raises(VerificationError, match="scripted"):
        debian.build(recipe, imagemeta.LuksVariant.LUKS1, first, debian.DebianOptions(),
                     cache=tmp_path, builder="b", tools_builder="t", kernel=kernel)  # fmt: skip
    assert [p.name for p in first.iterdir()] == ["failed-build.log"]


SEARCHING_CFG = """\
menuentry 'Debian GNU/Linux' {
	cryptomount -u 5f0e
	set root='cryptouuid/5f0e'
	search --no-floppy --fs-uuid --set=root --hint='cryptouuid/5f0e' 7e0043e2
	linux /boot/vmlinuz-6.12 root=/dev/mapper/root ro console=ttyS0 panic=-1
}
"""


@pytest.mark.parametrize("searches", [True, False])
def test_the_assembly_refuses_a_grub_cfg_that_searches(tmp_path: Path, searches: bool) -> None:
    """The assembly VM's own check (the line of images/debian/assemble-init, run by sh):
    a grub.cfg that searches for its root is refused, one that names it passes."""
    script = (RECIPES / "debian" / "assemble-init").read_text().splitlines()
    line = next(text for text in script if "searches for a device" in text)
    cfg = tmp_path / "boot" / "grub" / "grub.cfg"
    cfg.parent.mkdir(parents=True)
    text = SEARCHING_CFG if searches else SEARCHING_CFG.replace("\tsearch", "\t# no search:")
    cfg.write_text(text)
    check = 'fail() { echo "FAILED $*"; exit 1; }\n' + line.replace("/mnt/", f"{tmp_path}/")
    done = run.run(["sh", "-c", check], check=False)
    said = done.stdout.decode()
    # (As in the script, the line's own status is grep's when nothing failed.)
    assert ("FAILED grub.cfg searches for a device" in said) is searches, said
