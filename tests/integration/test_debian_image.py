"""The Debian recipe for real: mmdebstrap in the builder, the assembly VM on our kernel,
then the image under the AmdSev firmware (passwordless, and one prompt without a secret)
and under Debian's own OVMF with the passphrase typed (the post's ordinary path).

What the image holds is read back independently of the build: cryptsetup opens the
LUKS header with the passphrase and with the key file found inside the root, and
debugfs reads the decrypted root's files.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from harness import run
from harness.boots import matrix, ordinary, scenarios, verdicts
from harness.components import ovmf, registry
from harness.guest import debian, image, proof, xts
from harness.guest.image import BuiltKernel, Image, LuksVariant, Ready, volume_key
from harness.host import qemu
from harness.passphrase import Passphrase
from tests.conftest import IMAGE_CACHE, ROOT, tools_builder

pytestmark = [
    pytest.mark.docker,
    pytest.mark.qemu,
    pytest.mark.tools,
    pytest.mark.slow,
    # The fixtures may wait for the cold OVMF and guest kernel builds.
    pytest.mark.timeout(3600),
]
OUT = ROOT / "out"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


#: The root password the test image is given (--root-password-file); the nightly's
#: image is built without one, so its root stays locked.
ROOT_PASSWORD = b"harness-test-root-password"


@pytest.fixture(scope="module")
def debian_image(guest_kernel: BuiltKernel, tmp_path_factory: pytest.TempPathFactory) -> Image:
    """One image per test run, whichever worker needs it first builds it (under a lock;
    the other waits and loads it): a Debian build is minutes of both cores."""
    recipe = debian.DebianRecipe.load("debian")
    assert recipe is not None
    dest = OUT / "images" / "test-debian"
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / ".test-debian.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = dest.parent / ".test-debian.run"
        if stamp.is_file() and stamp.read_text() == run_id and (dest / "image.json").is_file():
            return image.load(dest)
        password = tmp_path_factory.mktemp("root-password") / "password"
        password.write_bytes(ROOT_PASSWORD + b"\n")
        password.chmod(0o600)
        img = debian.build(
            recipe,
            LuksVariant.LUKS1,
            dest,
            debian.DebianOptions(root_password=password, kdf=image.Kdf.TEST),
            cache=IMAGE_CACHE,
            builder=tools_builder(registry.DEBIAN_IMAGE_BUILDER).tag,
            tools_builder=tools_builder().tag,
            kernel=guest_kernel,
        )
        stamp.write_text(run_id)
        return img


@pytest.fixture(scope="module")
def root_fs(debian_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root filesystem, decrypted with the volume key cryptsetup gives for the
    passphrase."""
    work = tmp_path_factory.mktemp("debian-root")
    meta = debian_image.metadata
    assert meta.payload_offset is not None
    key = volume_key(luks_header(debian_image, work / "header"), debian_image.passphrase_file, work)
    plain = work / "root.ext4"
    with open(debian_image.disk, "rb") as disk, open(plain, "wb") as out:
        disk.seek(meta.partition_start + meta.payload_offset)
        sector = 0
        # Up to the backup GPT: the filesystem ends where ext4 says, the rest is ignored.
        left = debian_image.disk.stat().st_size - disk.tell() - 1024 * 1024
        while left > 0:
            chunk = disk.read(min(image.CHUNK, left))
            # A hole (a block the build left free) stays zero; the rest is decrypted.
            out.write(chunk if not any(chunk) else xts.decrypt(key, chunk, 512, sector))
            sector += len(chunk) // 512
            left -= len(chunk)
    return plain


def luks_header(img: Image, dest: Path) -> Path:
    """The root partition's LUKS header, as a file cryptsetup reads."""
    meta = img.metadata
    assert meta.payload_offset is not None
    with open(img.disk, "rb") as disk:
        disk.seek(meta.partition_start)
        dest.write_bytes(disk.read(meta.payload_offset))
    return dest


def debugfs(fs: Path, request: str) -> str:
    """What debugfs prints for *request* (its banner, on stderr, left out)."""
    proc = subprocess.run(
        ["debugfs", "-R", request, str(fs)], capture_output=True, check=True, timeout=120
    )
    return proc.stdout.decode(errors="replace")


def test_the_image_is_laid_out_as_the_post_says(debian_image: Image, tmp_path: Path) -> None:
    meta = debian_image.metadata
    assert (meta.recipe, meta.ready, meta.suite) == ("debian", Ready.LOGIN, "trixie")
    assert meta.guest_kernel is image.GuestKernel.DEBIAN and meta.kernel
    assert stat.S_IMODE(debian_image.passphrase_file.stat().st_mode) == 0o600
    table = json.loads(run.run(["sfdisk", "--json", str(debian_image.disk)]).stdout)
    esp, root = table["partitiontable"]["partitions"]
    assert esp["type"] == ESP_TYPE
    assert root["start"] * 512 == meta.partition_start
    # The removable-media path, read by mtools, not by the code that checked it.
    listing = run.run(
        ["mdir", "-b", "-i", f"{debian_image.disk}@@{esp['start'] * 512}", "::/EFI/BOOT"]
    ).stdout.decode()
    assert "BOOTX64.EFI" in listing.upper()
    header = luks_header(debian_image, tmp_path / "header")
    run.run(["cryptsetup", "open", "--test-passphrase", "--key-file",
             str(debian_image.passphrase_file), str(header)])  # fmt: skip
    # Free blocks of the root were never encrypted: the disk stays sparse.
    allocated = debian_image.disk.stat().st_blocks * 512
    assert allocated < 0.6 * debian_image.disk.stat().st_size


def test_the_root_is_configured_to_unlock_with_its_key_file(
    debian_image: Image, root_fs: Path, tmp_path: Path
) -> None:
    # e2fsck reads every block ext4 uses; the free ones, never encrypted, are noise.
    proc = subprocess.run(["e2fsck", "-fn", str(root_fs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    header = luks_header(debian_image, tmp_path / "header")
    luks_uuid = run.run(["cryptsetup", "luksUUID", str(header)]).stdout.decode().strip()
    crypttab = debugfs(root_fs, "cat /etc/crypttab")
    assert crypttab.split() == [
        "root", f"UUID={luks_uuid}", "/etc/cryptsetup-keys.d/root.key", "luks",
    ]  # fmt: skip
    # The key file: root's, 0400, and it opens the LUKS header (its own key slot).
    stat_text = debugfs(root_fs, "stat /etc/cryptsetup-keys.d/root.key")
    assert re.search(r"Mode:\s+0400", stat_text) and re.search(r"User:\s+0\s", stat_text)
    key = tmp_path / "root.key"
    run.run(["debugfs", "-R", f"dump /etc/cryptsetup-keys.d/root.key {key}", str(root_fs)])
    run.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(key), str(header)])
    key_bytes = key.read_bytes()
    assert len(key_bytes) == image.KEY_BYTES
    # The proof key: root's, 0600, the padded blocks of the owner's copy beside the disk.
    stat_text = debugfs(root_fs, f"stat /{proof.ROOT_KEY}")
    assert re.search(r"Mode:\s+0600", stat_text) and re.search(r"User:\s+0\s", stat_text)
    pads = tmp_path / "proof.pads"
    run.run(["debugfs", "-R", f"dump /{proof.ROOT_KEY} {pads}", str(root_fs)])
    assert pads.read_bytes() == proof.padded_blocks(proof.read_key(debian_image.disk.parent))
    # GRUB unlocks the root by its UUID in the distribution's own grub.cfg.
    grub_cfg = debugfs(root_fs, "cat /boot/grub/grub.cfg")
    assert f"cryptomount -u {luks_uuid}" in grub_cfg
    assert "grub-mkconfig" in grub_cfg
    assert "GRUB_ENABLE_CRYPTODISK=y" in debugfs(root_fs, "cat /etc/default/grub")
    # The initramfs is readable by root only (UMASK=0077).
    boot = debugfs(root_fs, "ls -l /boot")
    initrds = [ln for ln in boot.splitlines() if "initrd.img-" in ln]
    assert initrds and all(re.search(r"\b100600\b", ln) for ln in initrds), boot
    # Empty machine-id; root's password as given, hashed (yescrypt); no host keys.
    assert debugfs(root_fs, "cat /etc/machine-id") == ""
    shadow = debugfs(root_fs, "cat /etc/shadow").splitlines()
    root_entry = next(line.split(":") for line in shadow if line.startswith("root:"))
    assert root_entry[1].startswith("$y$"), root_entry[1][:4]
    assert ROOT_PASSWORD not in debugfs(root_fs, "cat /etc/shadow").encode()
    assert "ssh_host_" not in debugfs(root_fs, "ls /etc/ssh")
    assert f"harness-{debian_image.token}" == debugfs(root_fs, "cat /etc/hostname").strip()
    # No secret in anything the build published beside the disk.
    passphrase = Passphrase.read(debian_image.passphrase_file).value
    for name in ("image.json", debian.BUILD_LOG, debian.ASSEMBLY_LOG, debian.PACKAGES_FILE):
        text = (debian_image.disk.parent / name).read_bytes()
        assert passphrase not in text and key_bytes not in text, name
        assert proof.read_key(debian_image.disk.parent) not in text, name
        assert ROOT_PASSWORD not in text, name
    leftovers = {p.name for p in debian_image.disk.parent.iterdir()}
    assert leftovers == {
        "disk.img", "image.json", "passphrase", proof.KEY_FILE, debian.BUILD_LOG,
        debian.ASSEMBLY_LOG, debian.PACKAGES_FILE,
    }  # fmt: skip


def prompts(transcript: Path) -> tuple[int, int]:
    text = transcript.read_text(errors="replace")
    return (
        len(re.findall(verdicts.PROMPT, text)),
        len(re.findall(verdicts.INITRAMFS_PROMPT, text)),
    )


def test_the_debian_boots(debian_image: Image, firmware: ovmf.OvmfBuild, accel: qemu.Accel) -> None:
    """The Debian variant's boots, as the nightly runs them (two at a time), in one test
    so that one worker runs them:

    * passwordless: no prompt at all, the login prompt with this image's token, and
      nothing loaded from the disk's GRUB 2.12 modules (patches/ovmf/0003);
    * no-secret: exactly one prompt, GRUB's;
    * broken-keyslot: without panic=-1 the initramfs dropped to a root shell on the
      host's console, where the key file (which opens the host's intact copy of the
      disk) is readable; now it reboots;
    * search-hijack: the host garbles the root's UUID and offers a filesystem of its
      own with it; the image names its root (no search), the firmware refuses other
      disks, the initramfs refuses the damaged root, the host's kernel never runs;
    * ordinary: Debian's OVMF, the image's own GRUB asks once.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    host = image.build_image(
        matrix.HOST_RECIPE,
        matrix.HOST_VARIANT,
        OUT / "images" / f"test-debian-host-{worker}",
        IMAGE_CACHE,
        tools_builder().tag,
    )
    results = matrix.run_debian(
        matrix.Firmware(ovmf.firmware(firmware), firmware.manifest.launch_digest),
        debian_image,
        accel,
        OUT / "boot" / f"test-debian-{worker}",
        host_disk=scenarios.HostDisk(
            host.disk, Passphrase.read(host.passphrase_file), host.disk.parent / image.HOST_BOOT
        ),
    )
    assert [r.variant for r in results] == ["debian-luks1"] * len(matrix.DEBIAN_CASES)
    boots = {r.scenario: r for r in results}
    for name, result in boots.items():
        assert result.passed, f"{name}: {result.detail}"
    text = boots["passwordless"].transcript.read_text(errors="replace")
    assert prompts(boots["passwordless"].transcript) == (0, 0)
    assert re.search(rf"harness-{debian_image.token} login:", text)
    assert "x86_64-efi" not in text
    assert prompts(boots["no-secret"].transcript) == (1, 0)
    keyslot = boots["broken-keyslot"].transcript.read_text(errors="replace")
    assert "Rebooting automatically due to panic= boot argument" in keyslot
    assert "(initramfs)" not in keyslot
    assert prompts(boots[ordinary.NAME].transcript) == (1, 0)
    ordinary_text = boots[ordinary.NAME].transcript.read_text(errors="replace")
    assert "Entering grub config" not in ordinary_text


def test_build_image_refuses_bad_options_in_one_sentence() -> None:
    for args in (
        ["--recipe", "debian", "--suite", "sid"],
        ["--recipe", "debian", "--size", "100M"],
        ["--recipe", "debian", "--packages", "vim;reboot"],
        ["--recipe", "debian", "--format", "vmdk"],
        ["--recipe", "minimal", "--suite", "trixie"],
    ):
        proc = subprocess.run(
            [str(ROOT / "inv"), "build-image", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().startswith("error:"), proc.stderr
