"""LUKS and GPT on plain files, without dm-crypt: the header cryptsetup formats, the
payload encrypted in Python (AES-XTS-plain64), the volume key read back, and what a
hostile host does to a disk (a killed key slot, a garbled root UUID, its own disk).

Passphrases only travel in 0600 files, never on a command line or in a log."""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from harness import run
from harness.errors import ConfigError, InfrastructureError
from harness.files import write_private
from harness.guest import xts
from harness.guest.imagemeta import (
    PARTITION_START,
    SECTOR,
    ImageMetadata,
    Kdf,
    LuksVariant,
)
from harness.passphrase import Passphrase

log = logging.getLogger(__name__)


KEY_BYTES = 64


#: The passphrase is in LUKS key slot 0, the initramfs's key file in this one.
KEY_FILE_SLOT = 1


#: The key slot the passphrase opens (luksFormat's first).
PASSPHRASE_SLOT = 0


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
