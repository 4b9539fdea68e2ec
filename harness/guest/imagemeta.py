"""What an image is: its recipe under images/, its LUKS variant and KDF costs, the
kernel it boots, and its metadata (``image.json``)."""

from __future__ import annotations

import enum
import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import RECIPES
from harness.errors import ConfigError, InputError
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
