"""Encrypted guest images, built rootless and without dm-crypt.

A GPT disk with one LUKS partition holding an ext4 filesystem. cryptsetup formats a
real LUKS header on a plain file; the payload is the ``mkfs.ext4 -d`` image encrypted in
Python with the volume key (AES-XTS-plain64, 512-byte sectors) and written at the
payload offset; sfdisk lays out the GPT. Every image is checked with
``cryptsetup open --test-passphrase`` before it is published.

Passphrases only travel in 0600 files, never on a command line or in a log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path

from harness import run
from harness.files import write_private
from harness.guest import proof
from harness.guest.cryptdisk import (
    HOST_BOOT,
    KEY_BYTES,
    _gpt_disk,
    _luks_volume,
    _no_grub,
)
from harness.guest.debpkgs import (
    fetch_packages,
    fetch_unlock_tools,
)
from harness.guest.imagemeta import (
    PARTITION_START,
    GuestKernel,
    Image,
    ImageMetadata,
    LuksVariant,
    Recipe,
)
from harness.guest.rootfs import (
    BuiltKernel,
    _built_root_tree,
    _kernel,
    _root_tree,
)
from harness.passphrase import Passphrase

log = logging.getLogger(__name__)


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
