"""The Debian recipe for real: mmdebstrap in the builder, the assembly VM on our kernel,
then the image under the AmdSev firmware (passwordless, one prompt without a secret, and
the host's attacks) and under Debian's own OVMF with the passphrase typed (the post's
ordinary path). All of it is the run's one night with the Debian variant
(tests/integration/conftest.py): its image is read here, its boots judged here.

What the image holds is read back independently of the build: cryptsetup opens the
LUKS header with the passphrase and with the key file found inside the root, and
debugfs reads the decrypted root's files.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import pytest

from harness import run
from harness.boots import ordinary, verdicts
from harness.flows import nightly
from harness.guest import cryptdisk, debian, imagemeta, proof, xts
from harness.guest.cryptdisk import volume_key
from harness.guest.imagemeta import Image, Ready
from harness.passphrase import Passphrase
from tests.conftest import ROOT
from tests.integration.conftest import DebianNight
from tests.integration.test_nightly import read_in_chromium, results_of

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


@pytest.fixture(scope="module")
def debian_image(night_with_debian: DebianNight) -> Image:
    """The Debian image the run's night with the Debian variant built (one Debian build
    per test run, tests/integration/conftest.py), as ``./inv nightly`` makes it: no root
    password, so root's account stays locked."""
    return night_with_debian.image


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
            chunk = disk.read(min(cryptdisk.CHUNK, left))
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
    assert meta.guest_kernel is imagemeta.GuestKernel.DEBIAN and meta.kernel
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
    assert len(key_bytes) == cryptdisk.KEY_BYTES
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
    # Empty machine-id; no root password was given, so none logs in as root (the host
    # types on the serial console); no host keys.
    assert debugfs(root_fs, "cat /etc/machine-id") == ""
    shadow = debugfs(root_fs, "cat /etc/shadow").splitlines()
    root_entry = next(line.split(":") for line in shadow if line.startswith("root:"))
    assert root_entry[1] == "*" or root_entry[1].startswith("!"), root_entry[1][:4]
    assert "ssh_host_" not in debugfs(root_fs, "ls /etc/ssh")
    assert f"harness-{debian_image.token}" == debugfs(root_fs, "cat /etc/hostname").strip()
    # No secret in anything the build published beside the disk.
    passphrase = Passphrase.read(debian_image.passphrase_file).value
    for name in ("image.json", debian.BUILD_LOG, debian.ASSEMBLY_LOG, debian.PACKAGES_FILE):
        text = (debian_image.disk.parent / name).read_bytes()
        assert passphrase not in text and key_bytes not in text, name
        assert proof.read_key(debian_image.disk.parent) not in text, name
    leftovers = {p.name for p in debian_image.disk.parent.iterdir()}
    assert leftovers == {
        "disk.img", "image.json", "passphrase", proof.KEY_FILE, debian.BUILD_LOG,
        debian.ASSEMBLY_LOG, debian.PACKAGES_FILE,
    }  # fmt: skip


def prompts(transcript: Path) -> tuple[int, int]:
    """GRUB's passphrase prompts and the initramfs's, in a boot's transcript."""
    text = transcript.read_text(errors="replace")
    return (
        len(re.findall(verdicts.PROMPT, text)),
        len(re.findall(verdicts.INITRAMFS_PROMPT, text)),
    )


@pytest.mark.long
def test_a_night_with_the_debian_variant(night_with_debian: DebianNight) -> None:
    """The Debian image is built and booted to its login prompt, as the nightly runs
    them (two at a time); the report shows the boot to login and the history charts it.
    This night is the run's only Debian build and boots (tests/integration/conftest.py);
    its transcripts, read back from the report, are judged here once more:

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
    night = night_with_debian
    report, history = night.report, night.history
    assert night.status == nightly.EXIT_OK
    results = results_of(report)
    debian_cases = {c["name"]: c for c in results["cases"] if c["name"].endswith("-debian-luks1")}
    assert set(debian_cases) == {
        f"{name}-debian-luks1"
        for name in ("passwordless", "no-secret", "broken-keyslot", "search-hijack", "ordinary")
    }
    assert all(c["outcome"] == "passed" and c["seconds"] > 0 for c in debian_cases.values())
    image_case = next(c for c in results["cases"] if c["suite"] == "image")
    assert image_case["name"] == "debian-luks1" and image_case["outcome"] == "passed"
    assert "Debian trixie" in image_case["detail"]
    assert "debian" in results["timings"]
    page = read_in_chromium(report / "index.html")
    assert page.summary.startswith("PASS")
    for href in page.links:
        assert (report / href).is_file(), f"the page links to {href}, which is missing"
    assert {f"transcripts/{name}.log" for name in debian_cases} <= set(page.links)
    assert '<table id="logins">' in (report / "index.html").read_text()
    grid = read_in_chromium(history / "index.html")
    assert all((history / href).is_file() for href in grid.links)
    text = (history / "index.html").read_text()
    assert 'id="chart-boot/passwordless-debian-luks1"' in text

    def transcript(name: str) -> Path:
        return report / "transcripts" / f"{name}-debian-luks1.log"

    passwordless = transcript("passwordless").read_text(errors="replace")
    assert prompts(transcript("passwordless")) == (0, 0)
    assert re.search(rf"harness-{night.image.token} login:", passwordless)
    assert "x86_64-efi" not in passwordless
    assert prompts(transcript("no-secret")) == (1, 0)
    keyslot = transcript("broken-keyslot").read_text(errors="replace")
    assert "Rebooting automatically due to panic= boot argument" in keyslot
    assert "(initramfs)" not in keyslot
    assert prompts(transcript(ordinary.NAME)) == (1, 0)
    assert "Entering grub config" not in transcript(ordinary.NAME).read_text(errors="replace")
    # Nothing secret of the Debian image in the report or the history.
    data = night.image.passphrase_file.read_bytes()
    for path in [*report.rglob("*"), *history.rglob("*")]:
        if path.is_file():
            assert data not in path.read_bytes(), f"the passphrase is in {path}"


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
