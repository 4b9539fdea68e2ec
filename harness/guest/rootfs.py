"""What goes on an image's encrypted root: the kernel, its initramfs (a gzip'd newc
cpio), the unlock key file and programs, the proof program and the grub.cfg."""

from __future__ import annotations

import gzip
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InfrastructureError
from harness.firmware import guids
from harness.guest import cpio, proof, report
from harness.guest.debpkgs import (
    CLOSURE_FILES,
)
from harness.guest.imagemeta import (
    Recipe,
)

log = logging.getLogger(__name__)


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
