"""The owner's root proves that it is the one that booted: a MAC the host cannot print.

A token the guest prints is on the host's console after the first boot, so any kernel
the host gets to run can print it again. Instead, every image the harness builds holds
a key only the owner and the encrypted root have: ``proof.key`` (0600) beside the disk,
and RFC 2104's two padded blocks of it inside the root (``K ^ ipad``, ``K ^ opad``,
0600, :data:`ROOT_KEY`). For every launch the owner makes a fresh nonce and gives it to
the guest twice:

* as one more entry of its secret table (:data:`NONCE_GUID`), where the table reaches
  Linux and Linux has ``efi_secret`` (our kernel): the answer is then bound to this
  launch, since only this launch's table carries it;
* in QEMU's fw_cfg (:data:`FW_CFG_NAME`), for kernels without ``efi_secret`` (Debian's
  cloud kernels) and launches without a table (GRUB's prompt path).

The root's program (``images/minimal/proof``) answers with one line::

    HARNESS-PROOF from=secret|fw_cfg mac=<HMAC-SHA256(K, nonce), hex>

The nonce is no secret: what the host cannot do is compute the MAC, since the key is
only inside the encrypted root. The program answers 64 lowercase hex digits only, so
the host cannot make it a MAC oracle for other messages. The judge here is Python's
``hmac``; the guest computes the same with ``sha256sum`` over the padded blocks, so the
two are written apart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, GuestVerdict
from harness.files import read_private
from harness.firmware import guids

#: The nonce's entry in the owner's secret table.
NONCE_GUID = guids.PROOF_NONCE_ENTRY
#: The nonce's fw_cfg file; Linux shows it under /sys/firmware/qemu_fw_cfg/by_name/.
FW_CFG_NAME = "opt/org.harness/nonce"
#: Beside an image's disk: the owner's copy of the key (0600).
KEY_FILE = "proof.key"
#: Inside the encrypted root: the padded blocks the root's program hashes with.
ROOT_KEY = "etc/harness/proof.key"
KEY_BYTES = 32
#: SHA-256's block, the length of each padded key block.
BLOCK = 64
NONCE_BYTES = 32
PROOF_LINE = re.compile(r"HARNESS-PROOF from=(secret|fw_cfg) mac=([0-9a-f]{64})\s")
#: What the program prints when it has nothing to answer (no nonce, or not hex).
REFUSED_LINE = re.compile(r"HARNESS-PROOF refused: ([^\r\n]*)")


def program(text: str) -> bytes:
    """The root's proof program (``images/minimal/proof``) with the nonce's names in it."""
    named = text.replace("@NONCE_GUID@", str(NONCE_GUID))
    return named.replace("@FW_CFG_NAME@", FW_CFG_NAME).encode()


def fresh_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def padded_blocks(key: bytes) -> bytes:
    """RFC 2104's ``K ^ ipad`` then ``K ^ opad`` for a key no longer than a block."""
    if len(key) > BLOCK:
        raise ValueError("an HMAC-SHA256 key longer than a block is hashed first")
    padded = key.ljust(BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in padded) + bytes(b ^ 0x5C for b in padded)


def read_key(image_dir: Path) -> bytes:
    """The owner's key of the image in *image_dir*.

    Raises:
        ConfigError: the image has no key (built before roots proved themselves).
        InputError: the file is unreadable or readable by others.
    """
    path = image_dir / KEY_FILE
    if not path.exists():
        raise ConfigError(
            f"{image_dir} holds no {KEY_FILE}: the image was built before its root could "
            "prove itself, so no boot of it can be judged.",
            hint="rebuild it with ./inv build-image",
        )
    return read_private(path, "proof key")


@dataclass(frozen=True)
class Proof:
    """What the judge needs: this launch's nonce and the image's key.

    Attributes:
        nonce: 64 lowercase hex digits, fresh for this launch.
        from_secret: the answer must use the nonce from the secret table (the table
            reaches a Linux with efi_secret), not fw_cfg's copy.
    """

    nonce: str
    key: bytes = field(repr=False)
    from_secret: bool = False

    def expected(self) -> str:
        return hmac.new(self.key, self.nonce.encode(), hashlib.sha256).hexdigest()

    def judge(self, console: str, tail: str) -> str:
        """Judge the root's answer in *console* (the transcript so far).

        Raises:
            GuestVerdict: no answer, more than one, a MAC that does not verify, or the
                nonce taken from fw_cfg where the table carried it.
        """
        answers = PROOF_LINE.findall(console)
        if not answers:
            refused = REFUSED_LINE.search(console)
            why = f" (it said: {refused.group(1).strip()})" if refused else ""
            raise GuestVerdict(
                "The booted system never proved it is the owner's root: no HARNESS-PROOF "
                f"answer to this launch's nonce{why}.",
                "no proof",
                tail,
            )
        if len(answers) > 1:
            raise GuestVerdict(
                f"{len(answers)} HARNESS-PROOF answers in one boot: one is the owner's root "
                "at most, the rest someone else's.",
                "proof",
                tail,
            )
        source, mac = answers[0]
        if not hmac.compare_digest(mac, self.expected()):
            raise GuestVerdict(
                "The booted system's HARNESS-PROOF does not verify under the owner's key: "
                "whatever printed it is not the owner's root answering this launch.",
                "proof",
                tail,
            )
        if self.from_secret and source != "secret":
            raise GuestVerdict(
                f"The root answered the nonce from {source}, though this launch's secret "
                "table carried it to a Linux that lists secrets: the answer is not bound "
                "to this launch.",
                "proof",
                tail,
            )
        return f"the root proved itself (HMAC of this launch's nonce, from {source})"
