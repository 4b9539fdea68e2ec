"""Encrypted guest images, built rootless and without dm-crypt.

A GPT disk with one LUKS partition holding an ext4 filesystem. cryptsetup formats a
real LUKS header on a plain file; the payload is the ``mkfs.ext4 -d`` image encrypted in
Python with the volume key (AES-XTS-plain64, 512-byte sectors) and written at the
payload offset; sfdisk lays out the GPT. Every image is checked with
``cryptsetup open --test-passphrase`` before it is published.

Passphrases only travel in 0600 files, never on a command line or in a log.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import run
from harness.config import RECIPES
from harness.errors import ConfigError, InfrastructureError, InputError
from harness.files import write_private
from harness.firmware import guids
from harness.guest import cpio, proof, report, xts
from harness.host import containers
from harness.passphrase import Passphrase
from harness.records import Fields, load_json

log = logging.getLogger(__name__)

#: The partition starts at 1 MiB, as every partitioning tool aligns it.
PARTITION_START = 1024 * 1024
SECTOR = 512


class Kdf(enum.StrEnum):
    """The key derivation costs of the passphrase's key slot.

    ``test``: 1000 PBKDF2 iterations, or argon2id with 32 MiB and 4 passes, so GRUB
    derives the key in seconds under TCG; a passphrase of the owner's choosing is then
    cheap to guess from a copy of the disk. ``standard``: cryptsetup's own costs,
    benchmarked on the building machine for 2 s (argon2id: up to 1 GiB and 4 threads,
    which the guest's memory must hold when GRUB unlocks). Ship ``standard``.
    """

    TEST = "test"
    STANDARD = "standard"


#: What cryptsetup benchmarks a standard key slot for (its own default, made explicit).
STANDARD_ITER_TIME_MS = 2000


class LuksVariant(enum.StrEnum):
    """What GRUB has to unlock, with the passphrase slot's KDF costs (:class:`Kdf`)."""

    LUKS1 = "luks1"
    LUKS2_PBKDF2 = "luks2-pbkdf2"
    LUKS2_ARGON2ID = "luks2-argon2id"

    @property
    def format_args(self) -> list[str]:
        """luksFormat's arguments with the test costs (every image but a Debian one)."""
        return self.format_args_for(Kdf.TEST)

    def format_args_for(self, kdf: Kdf) -> list[str]:
        common = ["--cipher", "aes-xts-plain64", "--key-size", "512", "--hash", "sha256"]
        if self is LuksVariant.LUKS1:
            return ["--type", "luks1", *common, *self.kdf_args(kdf)]
        return ["--type", "luks2", *common, *self.kdf_args(kdf), "--sector-size", "512"]

    def kdf_args(self, kdf: Kdf) -> list[str]:
        """The KDF and its costs, for luksFormat and luksAddKey alike."""
        pbkdf = {
            LuksVariant.LUKS1: [],
            LuksVariant.LUKS2_PBKDF2: ["--pbkdf", "pbkdf2"],
            LuksVariant.LUKS2_ARGON2ID: ["--pbkdf", "argon2id"],
        }[self]
        if kdf is Kdf.STANDARD:
            return [*pbkdf, "--iter-time", str(STANDARD_ITER_TIME_MS)]
        if self is LuksVariant.LUKS2_ARGON2ID:
            return [*pbkdf, "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4",
                    "--pbkdf-parallel", "1"]  # fmt: skip
        return [*pbkdf, "--pbkdf-force-iterations", "1000"]

    @property
    def keyslot_args(self) -> list[str]:
        """The KDF of the key file's slot: always the test costs. The key file is 64
        random bytes, so no KDF cost makes it harder to guess; a high one would only make
        the initramfs slow to unlock."""
        return self.kdf_args(Kdf.TEST)

    @property
    def header_bytes(self) -> int:
        """Room for the header: cryptsetup's default payload offsets."""
        return 2 * 1024 * 1024 if self is LuksVariant.LUKS1 else 16 * 1024 * 1024


class GuestKernel(enum.StrEnum):
    """Which kernel an image boots, and so who judges it.

    ``built``: ours (``./inv build-kernel``, with ``efi_secret``). The initramfs unlocks
    the LUKS root again with the kernel's dm-crypt and a key file, switches root, and
    the root's own init reports what Linux lists in ``/sys/kernel/security/secrets/coco``
    (see :mod:`harness.guest.report`). ``debian``: the distribution's cloud kernel, which
    has neither; the busybox initramfs GRUB loaded prints the marker itself.
    """

    BUILT = "built"
    DEBIAN = "debian"


class DiskFormat(enum.StrEnum):
    """How an image's disk is stored (``qcow2``: converted by qemu-img, as the post does)."""

    RAW = "raw"
    QCOW2 = "qcow2"

    @property
    def file_name(self) -> str:
        return "disk.img" if self is DiskFormat.RAW else "disk.qcow2"


class Ready(enum.StrEnum):
    """What shows, on the serial console, that an image booted.

    ``marker``: the harness's own guests print ``HARNESS-BOOTED token=...``.
    ``login``: a distribution's system reaches its login prompt, the hostname carrying
    the token (``harness-TOKEN login:``; images/debian).
    """

    MARKER = "marker"
    LOGIN = "login"


@dataclass(frozen=True)
class Recipe:
    """An image recipe: ``images/NAME/recipe.toml`` and the files beside it.

    A recipe may name a ``base`` recipe: it then takes the base's settings and files
    and replaces only what it holds itself (the hostile-host scenarios' images differ
    from the minimal one in their grub.cfg alone).
    """

    name: str
    directories: tuple[Path, ...]  # its own first, then its base's
    packages: tuple[str, ...]  # every flavour's (busybox)
    kernel_package: str  # the Debian kernel the debian flavour boots
    kernel_glob: str
    busybox: str
    filesystem_mib: int
    #: Keep the root's kernel and initramfs unencrypted beside the disk, in
    #: :data:`HOST_BOOT` (the hostile host's own disk: they are its to reuse).
    keeps_boot: bool = False

    @classmethod
    def load(cls, name: str, _seen: tuple[str, ...] = ()) -> Recipe:
        directory = RECIPES / name
        try:
            data = tomllib.loads((directory / "recipe.toml").read_text())
        except FileNotFoundError as err:
            known = sorted(p.name for p in RECIPES.iterdir() if (p / "recipe.toml").exists())
            raise ConfigError(f"No image recipe {name!r}; known: {', '.join(known)}.") from err
        if data.get("kind", "minimal") != "minimal":
            raise ConfigError(
                f"Image recipe {name!r} is a {data['kind']} recipe, not one of the "
                "harness's own guests."
            )
        if "base" not in data:
            return cls(
                name,
                (directory,),
                tuple(data["packages"]),
                data["kernel_package"],
                data["kernel_glob"],
                data["busybox"],
                int(data["filesystem_mib"]),
                bool(data.get("keeps_boot", False)),
            )
        if data["base"] in (*_seen, name):
            raise ConfigError(f"Image recipe {name!r} is its own base.")
        base = cls.load(data["base"], (*_seen, name))
        return cls(
            name,
            (directory, *base.directories),
            tuple(data.get("packages", base.packages)),
            data.get("kernel_package", base.kernel_package),
            data.get("kernel_glob", base.kernel_glob),
            data.get("busybox", base.busybox),
            int(data.get("filesystem_mib", base.filesystem_mib)),
            bool(data.get("keeps_boot", base.keeps_boot)),
        )

    def file(self, name: str) -> Path:
        """The recipe's own *name*, or its base's."""
        for directory in self.directories:
            if (directory / name).exists():
                return directory / name
        raise ConfigError(f"Image recipe {self.name!r} has no {name}.")


#: Format of ``image.json``; ``image.schema.json`` beside this module describes it.
IMAGE_SCHEMA = "harness-image/1"
#: Recipe of images made before image.json named its recipe.
DEFAULT_RECIPE = "minimal"


@dataclass(frozen=True)
class ImageMetadata:
    """``image.json`` (harness-image/1): how an image was made. No secret in here.

    A boot needs the LUKS variant and the token; the rest describes the build and is
    optional when read, so images made before a key existed (``recipe``: then the
    minimal one; ``kernel``) and hand-written image.json files still load.
    :func:`build_image` always writes every key.
    """

    variant: LuksVariant  # "luks" in the file
    token: str
    recipe: str = DEFAULT_RECIPE
    luks_format: tuple[str, ...] = ()
    payload_offset: int | None = None
    partition_start: int = PARTITION_START  # where every image has had it
    disk_sha256: str | None = None
    kernel: str | None = None
    guest_kernel: GuestKernel = GuestKernel.DEBIAN  # what images had before "built"
    ready: Ready = Ready.MARKER  # every image before the Debian recipe
    suite: str | None = None  # the Debian recipe's
    disk_format: DiskFormat = DiskFormat.RAW
    #: The root filesystem's UUID (what a grub.cfg searches for). No secret: a
    #: distribution's cloud image carries the same one in every copy. None for images
    #: made before it was kept.
    root_fs_uuid: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The keys in the order image.json has always had them; unknown ones left out."""
        data: dict[str, Any] = {
            "schema": IMAGE_SCHEMA,
            "recipe": self.recipe,
            "luks": self.variant.value,
            "luks_format": list(self.luks_format),
            "payload_offset": self.payload_offset,
            "partition_start": self.partition_start,
            "token": self.token,
            "disk_sha256": self.disk_sha256,
            "kernel": self.kernel,
            "guest_kernel": self.guest_kernel.value,
            "ready": self.ready.value,
            "suite": self.suite,
            "disk_format": self.disk_format.value,
            "root_fs_uuid": self.root_fs_uuid,
        }
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_json(cls, data: object, where: str = "image.json") -> ImageMetadata:
        """Raises: InputError: a field is missing or wrong (the message names it)."""
        f = Fields(data, where)
        schema = f.text("schema", IMAGE_SCHEMA)
        if schema != IMAGE_SCHEMA:
            raise InputError(f"{where}: schema {schema!r} is not {IMAGE_SCHEMA}.")
        return cls(
            variant=f.choice("luks", LuksVariant),
            token=f.text("token"),
            recipe=f.text("recipe", DEFAULT_RECIPE),
            luks_format=f.texts("luks_format", ()),
            payload_offset=f.optional_integer("payload_offset"),
            partition_start=f.integer("partition_start", PARTITION_START),
            disk_sha256=f.optional_text("disk_sha256"),
            kernel=f.optional_text("kernel"),
            guest_kernel=f.choice("guest_kernel", GuestKernel, default=GuestKernel.DEBIAN),
            ready=f.choice("ready", Ready, default=Ready.MARKER),
            suite=f.optional_text("suite"),
            disk_format=f.choice("disk_format", DiskFormat, default=DiskFormat.RAW),
            root_fs_uuid=f.optional_text("root_fs_uuid"),
        )

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ImageMetadata:
        """Raises: InputError: *path* is missing, not JSON, or breaks the format."""
        return cls.from_json(load_json(path, hint="./inv build-image first"), str(path))


@dataclass(frozen=True)
class Image:
    """A built image and what a boot needs to know about it (no secret in here)."""

    disk: Path
    passphrase_file: Path
    metadata: ImageMetadata

    @property
    def token(self) -> str:
        return self.metadata.token

    @property
    def variant(self) -> LuksVariant:
        return self.metadata.variant

    @property
    def guest_kernel(self) -> GuestKernel:
        return self.metadata.guest_kernel


def _publish(tmp: Path, dest: Path) -> None:
    """Rename the finished download *tmp* to *dest*; when another build published it
    first, theirs stays (it may be in use) and *tmp* is left for the caller to remove."""
    try:
        tmp.rename(dest)
    except OSError:
        if not dest.is_dir():  # not another build's copy: a real failure
            raise


def fetch_packages(packages: tuple[str, ...], cache: Path, builder: str) -> Path:
    """Download *packages* (no dependencies) with apt in the builder container; unpack
    them. Safe when several builds ask at once (parallel test workers, the nightly): each
    downloads into its own directory and the first to finish publishes it."""
    key = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:16]
    # Keyed by the package list alone: recipes built on one base share the download.
    unpacked = cache / f"packages-{key}"
    if unpacked.is_dir():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    debs = Path(tempfile.mkdtemp(prefix=f"packages-{key}.debs-", dir=cache))
    # Metapackages (linux-image-cloud-amd64) are resolved to the package they name.
    script = (
        "set -e; apt-get -o Acquire::Check-Valid-Until=false update -qq >/dev/null; cd /debs; "
        "for p in " + " ".join(packages) + "; do "
        "real=$(apt-cache depends \"$p\" | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); "
        'apt-get download -qq "${real:-$p}"; done; '
        f"chown -R {os.getuid()}:{os.getgid()} /debs"
    )
    tmp = Path(tempfile.mkdtemp(prefix=f"packages-{key}.tmp-", dir=cache))
    try:
        containers.run_logged(
            builder,
            ["bash", "-c", script],
            mounts=[containers.Mount(debs, "/debs")],
            log_path=cache / "apt.log",
            as_root=True,
            what="package download",
        )
        for deb in sorted(debs.glob("*.deb")):
            run.run(["dpkg-deb", "-x", str(deb), str(tmp)])
        _publish(tmp, unpacked)
    finally:
        shutil.rmtree(debs, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return unpacked


#: What the built kernel's initramfs runs to unlock the root: Debian's cryptsetup from
#: the tools builder, with every library its dynamic linker loads.
UNLOCK_PACKAGES = ("cryptsetup-bin",)
UNLOCK_PROGRAMS = ("cryptsetup",)
#: The closure's list of files, and the Debian versions it came from.
CLOSURE_FILES = "files.txt"
CLOSURE_PACKAGES = "packages.txt"


def fetch_unlock_tools(cache: Path, builder: str) -> Path:
    """Debian's cryptsetup and its shared libraries, at their paths under the returned
    directory, as the builder's own ``ldd`` resolves them (so the set is exactly what
    the dynamic linker loads, never a guess). Cached per builder image (its tag names
    its Dockerfile and base)."""
    key = hashlib.sha256(
        json.dumps([builder, UNLOCK_PACKAGES, UNLOCK_PROGRAMS]).encode()
    ).hexdigest()[:16]
    done = cache / f"unlock-{key}"
    if (done / CLOSURE_FILES).is_file():
        return done
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="unlock-", dir=cache))
    script = (
        "set -e; apt-get -o Acquire::Check-Valid-Until=false update -qq >/dev/null; "
        "apt-get install -y -qq --no-install-recommends " + " ".join(UNLOCK_PACKAGES) +
        " >/dev/null; : > /tmp/files; "
        "for prog in " + " ".join(UNLOCK_PROGRAMS) + "; do "
        'bin=$(command -v "$prog"); echo "$bin" >> /tmp/files; '
        "ldd \"$bin\" | awk '$2 == \"=>\" && $3 ~ /^\\// {print $3} "
        "$1 ~ /^\\// {print $1}' >> /tmp/files; done; "
        "sort -u /tmp/files > /out/" + CLOSURE_FILES + "; "
        'while read -r f; do mkdir -p "/out$(dirname "$f")"; cp -L "$f" "/out$f"; done '
        "< /out/" + CLOSURE_FILES + "; "
        "dpkg-query -W -f='${Package} ${Version}\\n' " + " ".join(UNLOCK_PACKAGES) +
        " > /out/" + CLOSURE_PACKAGES + "; "
        f"chown -R {os.getuid()}:{os.getgid()} /out"
    )  # fmt: skip
    try:
        containers.run_logged(
            builder,
            ["bash", "-c", script],
            mounts=[containers.Mount(tmp, "/out")],
            log_path=cache / "unlock.log",
            as_root=True,
            what="cryptsetup for the initramfs",
        )
        _publish(tmp, done)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done


def _tree_entries(files: dict[str, tuple[int, bytes]]) -> list[cpio.Entry]:
    """cpio entries for *files* (path -> mode, bytes), each directory once, before its
    contents."""
    entries: list[cpio.Entry] = []
    dirs: set[str] = set()
    for path in sorted(files):
        parts = path.split("/")[:-1]
        for n in range(1, len(parts) + 1):
            d = "/".join(parts[:n])
            if d not in dirs:
                dirs.add(d)
                entries.append(cpio.Entry(d, 0o40755))
        mode, data = files[path]
        entries.append(cpio.Entry(path, mode, data))
    return entries


def initramfs(
    busybox: bytes, init: bytes, extra: dict[str, tuple[int, bytes]] | None = None
) -> bytes:
    """The gzipped initramfs: busybox as ``/bin/sh``, *init*, and *extra* files (path ->
    mode, bytes)."""
    files = {
        "bin/busybox": (0o100755, busybox),
        "bin/sh": (0o120777, b"busybox"),
        "init": (0o100755, init),
        **(extra or {}),
    }
    # /dev/console: a placeholder the kernel opens before any devtmpfs is mounted.
    entries = [cpio.Entry("dev", 0o40755), cpio.Entry("dev/console", 0o20600)]
    entries += [e for e in _tree_entries(files) if e.name != "dev"]
    return gzip.compress(cpio.newc(entries), mtime=0)


#: The root's LUKS mapping, in crypttab and so in /dev/mapper.
ROOT_MAPPING = report.BUILT_ROOT.removeprefix("/dev/mapper/")
#: The key file the initramfs unlocks the root with (0400, inside the encrypted volume).
KEY_FILE = "etc/keys/root.key"
KEY_BYTES = 64
#: The passphrase is in LUKS key slot 0, the initramfs's key file in this one.
KEY_FILE_SLOT = 1
#: The key slot the passphrase opens (luksFormat's first).
PASSPHRASE_SLOT = 0


@dataclass(frozen=True)
class BuiltKernel:
    """The kernel a ``built`` image boots (``./inv build-kernel``'s bzImage)."""

    path: Path
    release: str


def unlock_files(unlock: Path) -> dict[str, tuple[int, bytes]]:
    """The cryptsetup closure of :func:`fetch_unlock_tools`, as initramfs files."""
    return {
        path.lstrip("/"): (0o100755, (unlock / path.lstrip("/")).read_bytes())
        for path in (unlock / CLOSURE_FILES).read_text().split()
    }


def _built_root_tree(
    recipe: Recipe,
    kernel: BuiltKernel,
    busybox: bytes,
    unlock: Path,
    token: str,
    key: bytes,
    luks_uuid: str,
    fs_uuid: str,
    pads: bytes,
    dest: Path,
) -> None:
    """The encrypted root of a ``built`` image: the kernel, an initramfs that unlocks
    this root with *key* (by crypttab, UUID *luks_uuid*) and switches to it, and the
    root's own init that reports and proves itself with the padded proof key *pads*."""
    files = unlock_files(unlock)
    crypttab = f"{ROOT_MAPPING} UUID={luks_uuid} /{KEY_FILE} luks\n"
    files["etc/crypttab"] = (0o100644, crypttab.encode())
    files[KEY_FILE] = (0o100400, key)
    init = recipe.file("initramfs-init").read_bytes()
    boot = dest / "boot"
    (boot / "grub").mkdir(parents=True)
    shutil.copy2(kernel.path, boot / "vmlinuz")
    (boot / "initrd.img").write_bytes(initramfs(busybox, init, files))
    (boot / "grub" / "grub.cfg").write_text(grub_cfg(recipe, token, luks_uuid, fs_uuid))
    for d in ("bin", "sbin", "proc", "sys", "dev", "run", "etc/harness"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "bin" / "busybox").write_bytes(busybox)
    (dest / "bin" / "busybox").chmod(0o755)
    root_init = (
        recipe.file("root-init")
        .read_text()
        .replace("@DISK_PASSPHRASE_GUID@", str(guids.DISK_PASSPHRASE_ENTRY))
        .replace("@REMOVE_SECRET_GUID@", str(report.REMOVE_SECRET_GUID))
    )
    (dest / "sbin" / "init").write_text(root_init)
    (dest / "sbin" / "init").chmod(0o755)
    (dest / "etc" / "harness" / "token").write_text(token + "\n")
    for path, (mode, data) in proof_files(recipe, pads).items():
        (dest / path).write_bytes(data)
        (dest / path).chmod(mode & 0o7777)


def proof_files(recipe: Recipe, pads: bytes) -> dict[str, tuple[int, bytes]]:
    """The root's proof program and its key (:mod:`harness.guest.proof`), as files."""
    return {
        PROOF_PROGRAM: (0o100755, proof.program(recipe.file("proof").read_text())),
        proof.ROOT_KEY: (0o100600, pads),
    }


#: Where the proof program lives, on the root and in the Debian kernel's initramfs.
PROOF_PROGRAM = "bin/harness-proof"
#: The Debian kernel's fw_cfg driver (the nonce's second way in), which the busybox
#: initramfs loads itself: it has no modprobe and no module tree.
FW_CFG_MODULE = "kernel/drivers/firmware/qemu_fw_cfg.ko"


def grub_cfg(recipe: Recipe, token: str, luks_uuid: str, fs_uuid: str) -> str:
    """The recipe's grub.cfg for one image: its token, its LUKS and root UUIDs."""
    return (
        recipe.file("grub.cfg.in")
        .read_text()
        .replace("@TOKEN@", token)
        .replace("@LUKS_UUID@", luks_uuid)
        .replace("@FS_UUID@", fs_uuid)
    )


def _kernel(recipe: Recipe, unpacked: Path) -> Path:
    kernels = sorted(unpacked.glob(recipe.kernel_glob))
    if not kernels:
        raise InfrastructureError(f"No kernel matching {recipe.kernel_glob} in the packages.")
    return kernels[-1]


def _root_tree(
    recipe: Recipe,
    kernel: Path,
    unpacked: Path,
    token: str,
    uuids: tuple[str, str],
    pads: bytes,
    dest: Path,
) -> None:
    """The encrypted root of an image that boots the Debian kernel: the busybox
    initramfs on it prints the marker and the proof with the padded key *pads*."""
    boot = dest / "boot"
    (boot / "grub").mkdir(parents=True)
    shutil.copy2(kernel, boot / "vmlinuz")
    init = recipe.file("init").read_bytes()
    files = proof_files(recipe, pads)
    files["lib/modules/qemu_fw_cfg.ko"] = (0o100644, _fw_cfg_module(unpacked))
    (boot / "initrd.img").write_bytes(
        initramfs((unpacked / recipe.busybox).read_bytes(), init, files)
    )
    (boot / "grub" / "grub.cfg").write_text(grub_cfg(recipe, token, *uuids))


def _fw_cfg_module(unpacked: Path) -> bytes:
    """Raises: InfrastructureError: the kernel package has no uncompressed fw_cfg driver."""
    found = sorted((unpacked / "lib" / "modules").glob(f"*/{FW_CFG_MODULE}"))
    if not found:
        raise InfrastructureError(
            f"The recipe's kernel package has no {FW_CFG_MODULE} (uncompressed, for busybox's "
            "insmod): the root could not read the owner's nonce."
        )
    return found[-1].read_bytes()


def volume_key(luks: Path, passphrase_file: Path, work: Path) -> bytes:
    """The volume key, via luksDump into a 0600 file that is removed at once."""
    key_file = work / "volume.key"
    try:
        run.run(
            [
                "cryptsetup",
                "luksDump",
                "--batch-mode",
                "--dump-volume-key",
                "--volume-key-file",
                str(key_file),
                "--key-file",
                str(passphrase_file),
                str(luks),
            ]
        )
        return key_file.read_bytes()
    finally:
        key_file.unlink(missing_ok=True)


def disk_volume_key(disk: Path, passphrase: Passphrase, work: Path) -> bytes:
    """The volume key of *disk*'s LUKS partition, for a judge that must look for it: the
    header and the passphrase go to 0600 files in *work* (a private directory), removed
    before this returns; the key is never written anywhere.

    Raises:
        ConfigError: *disk* has no LUKS partition.
    """
    start, size = luks_partition(disk)
    header, pass_path = work / "header.luks", work / "passphrase"
    with open(disk, "rb") as f:
        f.seek(start)
        write_private({header: f.read(min(size, LUKS2_HEADER_MAX)), pass_path: passphrase.value})
    try:
        return volume_key(header, pass_path, work)
    finally:
        header.unlink(missing_ok=True)
        pass_path.unlink(missing_ok=True)


def luks_partition(disk: Path) -> tuple[int, int]:
    """Where *disk*'s LUKS partition starts and how long it is, in bytes.

    Raises:
        ConfigError: *disk* has no LUKS partition.
    """
    table = json.loads(run.run(["sfdisk", "--json", str(disk)]).stdout)
    for part in table["partitiontable"]["partitions"]:
        start, size = int(part["start"]) * SECTOR, int(part["size"]) * SECTOR
        with open(disk, "rb") as f:
            f.seek(start)
            if f.read(len(LUKS_MAGIC)) == LUKS_MAGIC:
                return start, size
    raise ConfigError(f"{disk} has no LUKS partition.")


def payload_offset(luks: Path) -> int:
    """Where the encrypted data starts, from cryptsetup's own dump."""
    dump = run.run(["cryptsetup", "luksDump", str(luks)]).stdout.decode()
    if m := re.search(r"^Payload offset:\s+(\d+)", dump, re.MULTILINE):
        return int(m.group(1)) * SECTOR
    if m := re.search(r"^\s+offset:\s+(\d+) \[bytes\]", dump, re.MULTILINE):
        return int(m.group(1))
    raise InfrastructureError(f"cryptsetup luksDump shows no payload offset for {luks}.")


def luks_header(
    variant: LuksVariant,
    pass_path: Path,
    work: Path,
    payload_bytes: int,
    uuid: str | None = None,
    key_path: Path | None = None,
    kdf: Kdf = Kdf.TEST,
) -> tuple[Path, int]:
    """``work/luks.img``: a LUKS header by cryptsetup, room for *payload_bytes* after it
    (sparse), and where the payload starts; the passphrase's slot has *kdf*'s costs. With
    *key_path*, a second key slot opens it with that key file (the initramfs's). Both
    openers are tested before it is returned.
    """
    luks = work / "luks.img"
    with open(luks, "wb") as f:
        f.truncate(variant.header_bytes + payload_bytes)
    uuid_args = ["--uuid", uuid] if uuid else []
    run.run(["cryptsetup", "luksFormat", "--batch-mode", "--use-urandom",
             *variant.format_args_for(kdf), *uuid_args, "--key-file", str(pass_path),
             str(luks)])  # fmt: skip
    if key_path is not None:
        run.run(["cryptsetup", "luksAddKey", "--batch-mode", *variant.keyslot_args,
                 "--key-slot", str(KEY_FILE_SLOT), "--key-file", str(pass_path), str(luks),
                 str(key_path)])  # fmt: skip
    for opener in (pass_path, key_path):
        if opener is not None:
            run.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(opener),
                     str(luks)])  # fmt: skip
    offset = payload_offset(luks)
    with open(luks, "r+b") as f:
        f.truncate(offset + payload_bytes)
    return luks, offset


#: LUKS magic, at the start of every LUKS1 and LUKS2 header.
LUKS_MAGIC = b"LUKS\xba\xbe"


def kill_key_slot(disk: Path, dest: Path, slot: int) -> int:
    """What a hostile host can do to a disk it holds: *dest* is a copy of *disk* whose
    LUKS partition has key *slot* killed (``cryptsetup luksKillSlot`` in batch mode needs
    no key). Returns the partition's offset.

    Raises:
        ConfigError: *disk* has no LUKS partition.
    """
    start, size = luks_partition(disk)
    # The host's copy, as sparse as the original (cp keeps the holes).
    run.run(["cp", "--sparse=always", str(disk), str(dest)])
    header = dest.with_name(dest.name + ".luks")
    with open(dest, "rb") as f:
        f.seek(start)
        header.write_bytes(f.read(min(size, LUKS2_HEADER_MAX)))
    run.run(["cryptsetup", "luksKillSlot", "--batch-mode", str(header), str(slot)])
    with open(dest, "r+b") as f:
        f.seek(start)
        f.write(header.read_bytes())
    header.unlink()
    return start


#: Where the root filesystem's UUID sits in an ext4 superblock (1024 + 0x68), and the
#: 16-byte block of ciphertext that holds its second half: XTS encrypts each 16-byte
#: block of a sector on its own, so garbling that block changes only those 16 bytes.
EXT4_UUID_OFFSET = 1024 + 0x68
UUID_BLOCK = (1136, 16)


def garble_root_uuid(disk: Path, dest: Path, metadata: ImageMetadata) -> None:
    """What a hostile host can do to the owner's encrypted root without any key: *dest*
    is a copy of *disk* in which the ciphertext block holding half of the root
    filesystem's UUID is replaced by random bytes, so that the UUID a reader finds
    there is no longer the owner's (GRUB's ext2 reader checks neither the UUID nor the
    superblock checksum, so everything else on the volume still reads).

    Raises:
        ConfigError: *metadata* does not say where the payload starts.
    """
    if metadata.payload_offset is None:
        raise ConfigError(f"{disk.parent}/image.json does not say where the payload starts.")
    at = metadata.partition_start + metadata.payload_offset + UUID_BLOCK[0]
    run.run(["cp", "--sparse=always", str(disk), str(dest)])
    with open(dest, "r+b") as f:
        f.seek(at)
        old = f.read(UUID_BLOCK[1])
        new = secrets.token_bytes(UUID_BLOCK[1])
        while new == old:  # vanishingly rare, but then nothing would be garbled
            new = secrets.token_bytes(UUID_BLOCK[1])
        f.seek(at)
        f.write(new)


#: The hostile host's own kernel and initramfs, kept beside its disk (recipe keeps_boot).
HOST_BOOT = "host-boot"
#: The size of the filesystem the host offers in place of the owner's root.
HIJACK_MIB = 64


def _no_grub(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "grub"]


def hijack_disk(boot: Path, fs_uuid: str, kernel: str | None, dest: Path, work: Path) -> None:
    """The host's answer to a grub.cfg that searches for *fs_uuid*: an unencrypted ext4
    of that UUID on *dest*, whose /boot holds the host's kernel and initramfs (from
    *boot*) under the names the owner's grub.cfg loads: ``vmlinuz`` and ``initrd.img``,
    and for a distribution's kernel release *kernel* (``linux-image-REL VERSION``)
    ``vmlinuz-REL`` and ``initrd.img-REL`` as well."""
    tree = work / "hijack-root"
    (tree / "boot").mkdir(parents=True)
    names = [("vmlinuz", "initrd.img")]
    if kernel and kernel.startswith("linux-image-"):
        release = kernel.split()[0].removeprefix("linux-image-")
        names.append((f"vmlinuz-{release}", f"initrd.img-{release}"))
    for vmlinuz, initrd in names:
        shutil.copy2(boot / "vmlinuz", tree / "boot" / vmlinuz)
        shutil.copy2(boot / "initrd.img", tree / "boot" / initrd)
    run.run(["mkfs.ext4", "-q", "-F", "-U", fs_uuid, "-d", str(tree), str(dest),
             f"{HIJACK_MIB}M"])  # fmt: skip
    shutil.rmtree(tree)


#: What kill_key_slot reads and rewrites: the largest default header (payload after it
#: is read and written back unchanged).
LUKS2_HEADER_MAX = 16 * 1024 * 1024
#: Bytes encrypted per step when a payload is streamed (a whole number of sectors).
CHUNK = 16 * 1024 * 1024


def free_ranges(fs: Path) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of the ext4 image *fs* that its block bitmaps mark
    free (as ``dumpe2fs`` reads them). ext4 never reads a free block before it writes it,
    so such a block needs no ciphertext: left as zeros on the disk (a hole), it decrypts
    to noise nobody reads. That shows which blocks are in use, as any LUKS volume not
    filled with random data before use does, and keeps a Debian image sparse.
    """
    text = run.run(["dumpe2fs", str(fs)]).stdout.decode(errors="replace")
    size = re.search(r"^Block size:\s+(\d+)", text, re.MULTILINE)
    if size is None:
        raise InfrastructureError(f"dumpe2fs shows no block size for {fs}.")
    block = int(size.group(1))
    ranges: list[tuple[int, int]] = []
    for m in re.finditer(r"^\s+Free blocks: (.*)$", text, re.MULTILINE):
        for part in filter(None, (p.strip() for p in m.group(1).split(","))):
            first, _, last = part.partition("-")
            ranges.append((int(first) * block, (int(last or first) + 1) * block))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _used(size: int, free: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The complement of *free* (sorted, disjoint) in ``[0, size)``."""
    used, at = [], 0
    for start, end in free:
        if start > at:
            used.append((at, min(start, size)))
        at = max(at, end)
    if at < size:
        used.append((at, size))
    return [(a, b) for a, b in used if b > a]


def fill_luks(
    disk: Path,
    start: int,
    luks: Path,
    offset: int,
    plain: Path,
    pass_path: Path,
    work: Path,
    free: Sequence[tuple[int, int]] = (),
) -> None:
    """Write *luks*'s header at *start* in *disk*, then *plain* encrypted after it,
    streamed (a Debian root is gigabytes); the *free* byte ranges of *plain* (see
    :func:`free_ranges`) are skipped and stay holes."""
    key = volume_key(luks, pass_path, work)
    with open(disk, "r+b") as f, open(luks, "rb") as header, open(plain, "rb") as src:
        f.seek(start)
        f.write(header.read(offset))
        for first, end in _used(plain.stat().st_size, list(free)):
            src.seek(first)
            f.seek(start + offset + first)
            at = first
            while at < end and (chunk := src.read(min(CHUNK, end - at))):
                f.write(xts.encrypt(key, chunk, SECTOR, at // SECTOR))
                at += len(chunk)
    del key


def _luks_volume(
    plain: bytes,
    variant: LuksVariant,
    pass_path: Path,
    work: Path,
    uuid: str | None = None,
    key_path: Path | None = None,
) -> tuple[Path, int]:
    """A LUKS volume holding *plain*: real header by cryptsetup, payload by us. With
    *key_path*, a second key slot opens it with that key file (the initramfs's)."""
    luks, offset = luks_header(variant, pass_path, work, len(plain), uuid, key_path)
    key = volume_key(luks, pass_path, work)
    with open(luks, "r+b") as f:
        f.seek(offset)
        f.write(xts.encrypt(key, plain))
    del key
    return luks, offset


def _gpt_disk(luks: Path, work: Path) -> Path:
    """A GPT disk whose one partition (at 1 MiB) is *luks*."""
    disk = work / "disk.img"
    size = luks.stat().st_size
    with open(disk, "wb") as f:
        f.truncate(PARTITION_START + size + 1024 * 1024)  # room for the backup GPT
    script = (
        f"label: gpt\nstart={PARTITION_START // SECTOR}, size={size // SECTOR}, "
        "type=linux, name=root\n"
    )
    run.run(["sfdisk", "--quiet", str(disk)], input=script.encode())
    with open(disk, "r+b") as f, open(luks, "rb") as src:
        f.seek(PARTITION_START)
        shutil.copyfileobj(src, f)
    return disk


def build_image(
    recipe_name: str,
    variant: LuksVariant,
    out: Path,
    cache: Path,
    builder: str,
    passphrase: Passphrase | None = None,
    kernel: BuiltKernel | None = None,
) -> Image:
    """Build ``out/disk.img``, ``out/image.json``, ``out/passphrase`` and ``out/proof.key``
    (both 0600; the key is the owner's copy of the root's proof key, harness.guest.proof).

    Everything is made in a private directory and moved into *out* at the end, so a
    failed build leaves the previous image (and its passphrase) as they were. The
    passphrase file holds exactly the bytes cryptsetup gets as its key file, which are
    the bytes the guest owner injects.

    Args:
        passphrase: the disk passphrase (see :func:`image_passphrase`); generated if
            not given.
        kernel: boot this kernel (``built``: the kernel unlocks the root again with a
            key file in the initramfs); without it, the recipe's Debian kernel.
    """
    passphrase = passphrase or Passphrase.generate()
    recipe = Recipe.load(recipe_name)
    debian = kernel is None
    packages = (recipe.kernel_package, *recipe.packages) if debian else recipe.packages
    unpacked = fetch_packages(packages, cache, builder)
    unlock = None if debian else fetch_unlock_tools(cache, builder)
    token = secrets.token_hex(8)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="image-", dir=out))
    os.chmod(work, 0o700)
    try:
        pass_path = work / "passphrase"
        proof_key = proof.new_key()
        write_private({pass_path: passphrase.value, work / proof.KEY_FILE: proof_key})
        pads = proof.padded_blocks(proof_key)
        del proof_key
        key_path = None
        luks_uuid, fs_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        if kernel is None:
            debian_kernel = _kernel(recipe, unpacked)
            kernel_name = debian_kernel.name
            _root_tree(recipe, debian_kernel, unpacked, token, (luks_uuid, fs_uuid), pads,
                       work / "root")  # fmt: skip
        else:
            assert unlock is not None
            key = secrets.token_bytes(KEY_BYTES)
            key_path = work / "root.key"
            write_private({key_path: key})
            kernel_name = f"linux-{kernel.release}"
            busybox = (unpacked / recipe.busybox).read_bytes()
            _built_root_tree(recipe, kernel, busybox, unlock, token, key, luks_uuid, fs_uuid,
                             pads, work / "root")  # fmt: skip
            del key
        if recipe.keeps_boot:
            shutil.copytree(work / "root" / "boot", work / HOST_BOOT, ignore=_no_grub)
        fs = work / "fs.img"
        run.run(["mkfs.ext4", "-q", "-F", "-L", "harness-root", "-U", fs_uuid,
                 "-d", str(work / "root"), str(fs), f"{recipe.filesystem_mib}M"])  # fmt: skip
        shutil.rmtree(work / "root")  # it holds the key files
        luks, offset = _luks_volume(fs.read_bytes(), variant, pass_path, work, luks_uuid, key_path)
        disk = _gpt_disk(luks, work)
        metadata = ImageMetadata(
            variant=variant,
            token=token,
            recipe=recipe.name,
            luks_format=tuple(variant.format_args),
            payload_offset=offset,
            partition_start=PARTITION_START,
            disk_sha256=hashlib.sha256(disk.read_bytes()).hexdigest(),
            kernel=kernel_name,
            guest_kernel=GuestKernel.DEBIAN if debian else GuestKernel.BUILT,
            root_fs_uuid=fs_uuid,
        )
        metadata.dump(work / "image.json")
        if recipe.keeps_boot:
            shutil.rmtree(out / HOST_BOOT, ignore_errors=True)
            os.replace(work / HOST_BOOT, out / HOST_BOOT)
        for name in ("disk.img", "image.json", "passphrase", proof.KEY_FILE):
            os.replace(work / name, out / name)
        return Image(out / "disk.img", out / "passphrase", metadata)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def image_passphrase(path: Path | None, secret_only: bool = False) -> Passphrase:
    """The passphrase a new image is locked with: read from *path*, or generated.

    Args:
        secret_only: accept a passphrase GRUB's prompt cannot type (the disk then
            unlocks only with the injected secret, never at the prompt).

    Raises:
        InputError: the passphrase file is refused (see :mod:`harness.passphrase`).
        ConfigError: the passphrase cannot be typed and *secret_only* is not set.
    """
    if path is None:
        return Passphrase.generate()
    passphrase = Passphrase.read(path)
    if not secret_only:
        passphrase.require_typable()
    return passphrase


def parse_variant(text: str) -> LuksVariant:
    try:
        return LuksVariant(text)
    except ValueError as err:
        choices = ", ".join(v.value for v in LuksVariant)
        raise ConfigError(f"--luks {text!r} is not one of {choices}.") from err


def parse_kdf(text: str) -> Kdf:
    try:
        return Kdf(text)
    except ValueError as err:
        raise ConfigError(f"--kdf {text!r} is not one of test, standard.") from err


def parse_guest_kernel(text: str) -> GuestKernel:
    try:
        return GuestKernel(text)
    except ValueError as err:
        choices = ", ".join(k.value for k in GuestKernel)
        raise ConfigError(f"--kernel {text!r} is not one of {choices}.") from err


def load(directory: Path) -> Image:
    """The image in *directory*, made by :func:`build_image`.

    Raises:
        ConfigError: *directory* holds no image.json.
        InputError: its image.json breaks the format (the message names the field).
    """
    meta_path = directory / "image.json"
    if not meta_path.is_file():
        raise ConfigError(f"{directory} holds no image.json.", hint="./inv build-image first")
    metadata = ImageMetadata.load(meta_path)
    return Image(directory / metadata.disk_format.file_name, directory / "passphrase", metadata)
