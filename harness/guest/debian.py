"""The Debian recipe: a real Debian guest with an encrypted root, built rootless.

It follows the seed's second post ("Building Encrypted Images for Confidential
Computing") without its loop devices, dm-crypt or root on the host:

1. In the Debian builder container, mmdebstrap makes the root from Debian's packages
   (cached across builds), and ``images/debian/make-root`` configures it: crypttab with
   a key file in ``/etc/cryptsetup-keys.d`` (0400) that cryptsetup-initramfs copies into
   the initramfs (``KEYFILE_PATTERN``, ``UMASK=0077``), ``GRUB_ENABLE_CRYPTODISK=y``, the
   serial console, an empty machine-id, a root password or SSH key only as given. It
   writes the root as an ext4 image and an empty EFI system partition.
2. On the host, as for the minimal recipe: a GPT disk with the ESP and a LUKS partition
   whose header cryptsetup formats on a plain file (a passphrase slot and the key file's
   slot), the payload encrypted in Python.
3. The assembly VM: our kernel (``./inv build-kernel``, which has dm-crypt) boots with
   the image as its disk and ``images/debian/assemble-init``, which opens the root with
   the key file and runs, in the guest's own root, what needs the real device:
   ``update-initramfs``, ``grub-install --removable`` and ``update-grub`` (so grub.cfg is
   the distribution's own, from its own grub-probe).

The image boots to a login prompt whose hostname carries the image's token.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness import run
from harness.config import RECIPES
from harness.errors import (
    CommandError,
    ConfigError,
    InfrastructureError,
    InputError,
    VerificationError,
)
from harness.files import read_input, read_private, write_private
from harness.guest import cryptdisk, debpkgs, imagemeta, proof, rootfs
from harness.guest.cryptdisk import KEY_BYTES
from harness.guest.imagemeta import (
    DiskFormat,
    GuestKernel,
    Image,
    ImageMetadata,
    Kdf,
    LuksVariant,
    Ready,
)
from harness.guest.rootfs import BuiltKernel
from harness.host import containers, qemu
from harness.passphrase import Passphrase

log = logging.getLogger(__name__)

#: The recipe kind this module builds (``kind`` in recipe.toml).
KIND = "debian"
#: The hostname is this plus the token: the login prompt names the image that booted.
HOSTNAME_PREFIX = "harness-"
#: Debian package names (Debian Policy 5.6.7).
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
#: Where the assembly VM's lines say how it ended.
ASSEMBLY_OK = "HARNESS-ASSEMBLY-OK"
ASSEMBLY_FAILED = "HARNESS-ASSEMBLY-FAILED"
#: TCG runs update-initramfs, grub-install and update-grub in two to four minutes here;
#: a loaded host gets several times that.
ASSEMBLY_TIMEOUT = 1200.0
ASSEMBLY_MEMORY_MIB = 1536
#: The image's files, beside disk.img/disk.qcow2, image.json and passphrase.
BUILD_LOG = "build.log"
ASSEMBLY_LOG = "assembly.log"
PACKAGES_FILE = "packages.txt"
#: The smallest root --size takes: a kernel, its initramfs and systemd fit with room.
MIN_SIZE_MIB = 1024
#: The ESP is the first partition, at 1 MiB; the root follows it.
ESP_START = imagemeta.PARTITION_START


@dataclass(frozen=True)
class DebianRecipe:
    """``images/NAME/recipe.toml`` of kind ``debian``."""

    name: str
    directory: Path
    suites: tuple[str, ...]
    mirror: str
    packages: tuple[str, ...]
    size_mib: int
    esp_mib: int

    @classmethod
    def load(cls, name: str) -> DebianRecipe | None:
        """The recipe *name* if it is a Debian one; None for any other kind.

        Raises:
            ConfigError: no such recipe.
        """
        directory = RECIPES / name
        try:
            data = tomllib.loads((directory / "recipe.toml").read_text())
        except FileNotFoundError:
            return None  # imagemeta.Recipe.load says which recipes there are
        if data.get("kind") != KIND:
            return None
        return cls(
            name,
            directory,
            tuple(data["suites"]),
            data["mirror"],
            tuple(data["packages"]),
            int(data["size_mib"]),
            int(data["esp_mib"]),
        )

    def file(self, name: str) -> Path:
        return self.directory / name


@dataclass(frozen=True)
class DebianOptions:
    """What ``./inv build-image --recipe debian`` takes beyond the LUKS variant."""

    suite: str | None = None
    size_mib: int | None = None
    packages: tuple[str, ...] = ()
    disk_format: DiskFormat = DiskFormat.RAW
    root_password: Path | None = None
    ssh_key: Path | None = None
    #: The passphrase slot's KDF costs: standard unless a test asks for fast ones.
    kdf: Kdf = Kdf.STANDARD


def parse_size(text: str) -> int:
    """``2G``, ``1536M`` or a number of MiB -> MiB.

    Raises:
        ConfigError: not a size, or too small for a Debian root.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([MG]i?B?)?\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"--size {text!r} is not a size like 2G or 1536M.")
    mib = int(m.group(1)) * (1024 if (m.group(2) or "M").upper().startswith("G") else 1)
    if mib < MIN_SIZE_MIB:
        raise ConfigError(
            f"--size {text} is too small: a Debian root with a kernel and its initramfs "
            f"needs at least {MIN_SIZE_MIB} MiB."
        )
    return mib


def parse_packages(text: str) -> tuple[str, ...]:
    """``a,b`` -> the package names, each checked.

    Raises:
        ConfigError: a name Debian would not accept (it reaches a shell in the builder).
    """
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    for name in names:
        if not PACKAGE_NAME.fullmatch(name):
            raise ConfigError(f"--packages: {name!r} is not a Debian package name.")
    return names


def parse_format(text: str) -> DiskFormat:
    """Raises: ConfigError: not raw or qcow2."""
    try:
        return DiskFormat(text)
    except ValueError as err:
        raise ConfigError(f"--format {text!r} is not one of raw, qcow2.") from err


def pick_suite(recipe: DebianRecipe, suite: str | None) -> str:
    if suite is None:
        return recipe.suites[0]
    if suite not in recipe.suites:
        raise ConfigError(
            f"--suite {suite!r} is not one the {recipe.name} recipe is made for: "
            f"{', '.join(recipe.suites)}."
        )
    return suite


def root_password(path: Path) -> bytes:
    """The guest's root password from a 0600 file (one line, its newline dropped).

    Raises:
        InputError: readable by others, empty, or more than one line.
    """
    data = read_private(path, "root password")
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data or b"\n" in data or b"\0" in data or b"\r" in data:
        raise InputError(f"The root password file {path} must hold one non-empty line.")
    return data


def ssh_key(path: Path) -> bytes:
    """An OpenSSH public key file (``authorized_keys`` lines; never a private key).

    Raises:
        InputError: unreadable, a private key, or no key line.
    """
    data = read_input(path, "SSH public key")
    if b"PRIVATE KEY" in data:
        raise InputError(f"{path} is a private key; give the public one (.pub).")
    lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    if not lines or not all(
        re.match(r"(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+", ln.strip()) for ln in lines
    ):
        raise InputError(f"{path} holds no OpenSSH public key lines.")
    return data if data.endswith(b"\n") else data + b"\n"


def esp_serial() -> str:
    """A FAT volume serial (8 hex digits; fstab's UUID=XXXX-XXXX)."""
    return secrets.token_hex(4).upper()


def make_root(
    recipe: DebianRecipe,
    suite: str,
    packages: tuple[str, ...],
    size_mib: int,
    ids: Ids,
    key: Path,
    inputs: dict[str, bytes],
    work: Path,
    cache: Path,
    builder: str,
    log_path: Path,
) -> Path:
    """Run ``make-root`` in the builder: ``work/out/{root.ext4,esp.img,packages.txt}``.

    *inputs* are further private files for ``/in`` (root-password, authorized_keys).
    """
    given = work / "in"
    given.mkdir(mode=0o700)
    shutil.copy2(recipe.file("make-root"), given / "make-root")
    shutil.copy2(key, given / "root.key")
    if inputs:
        write_private({given / name: data for name, data in inputs.items()})
    out = work / "out"
    out.mkdir()
    debs = cache / f"debian-{suite}-debs"
    debs.mkdir(parents=True, exist_ok=True)
    env = {
        "SUITE": suite,
        "MIRROR": recipe.mirror,
        "PACKAGES": ",".join(packages),
        "HOST_NAME": HOSTNAME_PREFIX + ids.token,
        "LUKS_UUID": ids.luks_uuid,
        "FS_UUID": ids.fs_uuid,
        "ESP_SERIAL": ids.esp_serial,
        "SIZE_MIB": str(size_mib),
        "ESP_MIB": str(recipe.esp_mib),
        "OWNER": f"{os.getuid()}:{os.getgid()}",
    }
    try:
        containers.run_logged(
            builder,
            ["bash", "/in/make-root"],
            mounts=[
                containers.Mount(given, "/in", read_only=True),
                containers.Mount(out, "/out"),
                containers.Mount(debs, "/cache"),
            ],
            env=env,
            log_path=log_path,
            as_root=True,
            what=f"Debian {suite} root",
        )
    finally:
        shutil.rmtree(given, ignore_errors=True)  # the key file and the password
    return out


@dataclass(frozen=True)
class Ids:
    """The names one image's pieces are found by (none is secret)."""

    token: str
    luks_uuid: str
    fs_uuid: str
    esp_serial: str

    @classmethod
    def fresh(cls) -> Ids:
        return cls(secrets.token_hex(8), str(uuid.uuid4()), str(uuid.uuid4()), esp_serial())


def gpt_disk(esp: Path, root_bytes: int, work: Path) -> tuple[Path, int]:
    """A raw disk with the ESP (partition 1, holding *esp*) and room for the root
    (partition 2, *root_bytes*); returns the disk and the root partition's offset."""
    esp_bytes = esp.stat().st_size
    root_start = ESP_START + esp_bytes
    disk = work / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(root_start + root_bytes + 1024 * 1024)  # room for the backup GPT
    s = imagemeta.SECTOR
    script = (
        "label: gpt\n"
        f"start={ESP_START // s}, size={esp_bytes // s}, type=uefi, name=esp\n"
        f"start={root_start // s}, size={root_bytes // s}, type=linux, name=root\n"
    )
    run.run(["sfdisk", "--quiet", str(disk)], input=script.encode())
    with open(disk, "r+b") as f, open(esp, "rb") as src:
        f.seek(ESP_START)
        shutil.copyfileobj(src, f, 1024 * 1024)
    return disk, root_start


def assembly_initramfs(busybox: bytes, unlock: Path, init: bytes, key: bytes) -> bytes:
    """The assembly VM's initramfs: busybox, cryptsetup's closure, the key file."""
    files = rootfs.unlock_files(unlock)
    files["root.key"] = (0o100400, key)
    return rootfs.initramfs(busybox, init, files)


def assemble(
    kernel: BuiltKernel,
    initrd: Path,
    disk: Path,
    log_path: Path,
    emulator: qemu.Qemu = qemu.SYSTEM,
    timeout: float = ASSEMBLY_TIMEOUT,
) -> float:
    """Boot the assembly VM on *disk* (TCG) until it powers off; its console goes to
    *log_path*. Returns the seconds it took.

    Raises:
        VerificationError: a step failed in the VM (the log's last line says which), or
            the VM ended without saying it finished.
        InfrastructureError: the VM did not end within *timeout*.
    """
    argv = [
        *emulator.command(),
        "-machine", "q35,accel=tcg",
        "-cpu", "max",
        "-smp", "2",
        "-m", str(ASSEMBLY_MEMORY_MIB),
        "-display", "none",
        "-monitor", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-kernel", str(kernel.path),
        "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 loglevel=4",
        "-drive", f"file={disk},if=virtio,format=raw,cache=unsafe",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        proc = run.run(argv, check=False, timeout=timeout, output=log_path)
    except CommandError as err:
        if not err.timed_out:
            raise
        raise InfrastructureError(
            f"The assembly VM did not finish within {timeout:g} s; its console is kept as "
            f"{FAILED_PREFIX}{log_path.name} in the image directory."
        ) from err
    took = time.monotonic() - started
    judge_assembly(log_path.read_text(errors="replace"), proc.returncode, log_path)
    return took


def judge_assembly(text: str, status: int, log_path: Path) -> None:
    """The assembly VM's console: it finished only if it said so, and said nothing failed.

    Raises:
        VerificationError: a step failed (named), or no line says it finished.
    """
    if m := re.search(rf"^{ASSEMBLY_FAILED} (.*)$", text, re.MULTILINE):
        raise VerificationError(
            f"The assembly VM failed at {m.group(1).strip()}; its console is kept as "
            f"{FAILED_PREFIX}{log_path.name} in the image directory.",
        )
    if not re.search(rf"^{ASSEMBLY_OK}\r?$", text, re.MULTILINE):
        raise VerificationError(
            f"The assembly VM ended (status {status}) without finishing; its console is kept "
            f"as {FAILED_PREFIX}{log_path.name} in the image directory."
        )


def check_esp(disk: Path) -> None:
    """The removable-media path OVMF boots must be on the ESP (read with mtools).

    Raises:
        VerificationError: it is not.
    """
    found = run.run(
        ["mdir", "-b", "-i", f"{disk}@@{ESP_START}", "::/EFI/BOOT"], check=False
    ).stdout.decode(errors="replace")
    if "BOOTX64.EFI" not in found.upper():
        raise VerificationError(
            f"grub-install left no EFI/BOOT/BOOTX64.EFI on {disk}'s EFI system partition."
        )


def build(
    recipe: DebianRecipe,
    variant: LuksVariant,
    out: Path,
    options: DebianOptions,
    *,
    cache: Path,
    builder: str,
    tools_builder: str,
    kernel: BuiltKernel,
    passphrase: Passphrase | None = None,
    emulator: qemu.Qemu = qemu.SYSTEM,
    timings: dict[str, float] | None = None,
) -> Image:
    """Build the Debian image into *out*: the disk (raw or qcow2), ``image.json``,
    ``passphrase`` and ``proof.key`` (0600, :mod:`harness.guest.proof`), the build and
    assembly logs and the package list.

    Everything is made in a private directory beside *out* and swapped in whole at the
    end, so a failed build leaves the previous image as it was (with the failed build's
    logs beside it, ``failed-*.log``). *timings* (if given) receives the seconds of each
    stage: root, disk, assembly.

    Raises:
        ConfigError: a bad option.
        InputError: the root password or SSH key file is refused.
        VerificationError: the assembly failed in the guest, or the result is incomplete.
    """
    suite = pick_suite(recipe, options.suite)
    foreign = out.is_dir() and not (out / "image.json").exists()
    if foreign and any(not p.name.startswith(FAILED_PREFIX) for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no image; pick another --out.")
    size_mib = options.size_mib or recipe.size_mib
    inputs: dict[str, bytes] = {}
    packages = list(recipe.packages)
    if options.root_password is not None:
        inputs["root-password"] = root_password(options.root_password)
    if options.ssh_key is not None:
        inputs["authorized_keys"] = ssh_key(options.ssh_key)
        packages.append("openssh-server")
    packages += [p for p in options.packages if p not in packages]
    passphrase = passphrase or Passphrase.generate()
    proof_key = proof.new_key()
    inputs["proof.key"] = proof.padded_blocks(proof_key)
    inputs["harness-proof"] = proof.program((RECIPES / "minimal" / "proof").read_text())
    busybox_pkg = debpkgs.fetch_packages(("busybox-static",), cache, tools_builder)
    busybox = (busybox_pkg / "bin/busybox").read_bytes()
    unlock = debpkgs.fetch_unlock_tools(cache, tools_builder)
    ids = Ids.fresh()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The new image directory, made beside the old one and swapped in whole at the end;
    # what only the build needs (the key file, the plaintext root) is in its scratch.
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(work, 0o700)
    scratch = work / ".scratch"
    scratch.mkdir(mode=0o700)
    timings = {} if timings is None else timings
    try:
        pass_path = work / "passphrase"
        key = secrets.token_bytes(KEY_BYTES)
        key_path = scratch / "root.key"
        write_private(
            {pass_path: passphrase.value, key_path: key, work / proof.KEY_FILE: proof_key}
        )
        del proof_key
        started = time.monotonic()
        made = make_root(recipe, suite, tuple(packages), size_mib, ids, key_path, inputs,
                         scratch, cache, builder, work / BUILD_LOG)  # fmt: skip
        timings["root"] = time.monotonic() - started
        started = time.monotonic()
        root_fs = made / "root.ext4"
        luks, offset = cryptdisk.luks_header(
            variant, pass_path, scratch, root_fs.stat().st_size, ids.luks_uuid, key_path,
            options.kdf,
        )  # fmt: skip
        disk, root_start = gpt_disk(made / "esp.img", luks.stat().st_size, scratch)
        free = cryptdisk.free_ranges(root_fs)
        cryptdisk.fill_luks(disk, root_start, luks, offset, root_fs, pass_path, scratch, free)
        for name in ("root.ext4", "esp.img"):
            (made / name).unlink()
        timings["disk"] = time.monotonic() - started
        initrd = scratch / "assemble.cpio.gz"
        init = recipe.file("assemble-init").read_bytes()
        write_private({initrd: assembly_initramfs(busybox, unlock, init, key)})
        del key
        timings["assembly"] = assemble(kernel, initrd, disk, work / ASSEMBLY_LOG, emulator)
        check_esp(disk)
        final = work / options.disk_format.file_name
        if options.disk_format is DiskFormat.QCOW2:
            run.run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(final)])
        else:
            os.replace(disk, final)
        metadata = ImageMetadata(
            variant=variant,
            token=ids.token,
            recipe=recipe.name,
            luks_format=tuple(variant.format_args_for(options.kdf)),
            payload_offset=offset,
            partition_start=root_start,
            disk_sha256=_sha256(final),
            kernel=_kernel_package(made / PACKAGES_FILE),
            guest_kernel=GuestKernel.DEBIAN,
            ready=Ready.LOGIN,
            suite=suite,
            disk_format=options.disk_format,
            root_fs_uuid=ids.fs_uuid,
        )
        metadata.dump(work / "image.json")
        os.replace(made / PACKAGES_FILE, work / PACKAGES_FILE)
        shutil.rmtree(scratch)  # the key file, the plaintext root's remains
        _swap_in(work, out)
        log.info("debian image: %s", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
        return Image(out / final.name, out / "passphrase", metadata)
    except BaseException:
        _keep_failed_logs(work, out)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _swap_in(new: Path, out: Path) -> None:
    """Replace the image directory *out* by *new* with two renames: a reader sees the old
    image or the new one, never half of each."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


#: A failed build's logs (no secret in them), beside the previous image, which stays.
FAILED_PREFIX = "failed-"


def _keep_failed_logs(work: Path, out: Path) -> None:
    if not work.is_dir():
        return  # swapped in already
    out.mkdir(parents=True, exist_ok=True)
    for name in (BUILD_LOG, ASSEMBLY_LOG):
        if (work / name).is_file():
            os.replace(work / name, out / f"{FAILED_PREFIX}{name}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _kernel_package(packages: Path) -> str | None:
    for line in packages.read_text().splitlines():
        name, _, version = line.partition(" ")
        if name.startswith("linux-image-") and name[len("linux-image-") :][:1].isdigit():
            return f"{name} {version}"
    return None
