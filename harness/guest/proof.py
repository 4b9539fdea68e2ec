"""The owner's root proves that it is the one that booted: a MAC the host cannot print.

A token the guest prints is on the host's console after the first boot, so any kernel
the host gets to run can print it again. Instead, every image the harness builds holds
a key only the owner and the encrypted root have: ``proof.key`` (0600) beside the disk,
and RFC 2104's two padded blocks of it inside the root (``K ^ ipad``, ``K ^ opad``,
0600, :data:`ROOT_KEY`). For every launch the owner makes a fresh nonce and gives it to
the guest one way only:

* ``secret``: as one more entry of its secret table (:data:`NONCE_GUID`), when the
  table reaches a Linux with ``efi_secret`` (our kernel). The nonce is then a secret
  of this launch: on SEV hardware only the launch the owner attested can read it, so
  even a host that knows K (it saw the passphrase typed on an earlier boot and opened
  the disk) cannot answer it, and the answer is bound to this launch.
* ``fw_cfg``: in QEMU's fw_cfg (:data:`FW_CFG_NAME`), for kernels without
  ``efi_secret`` (Debian's cloud kernels) and launches without a table (GRUB's prompt
  path, the ordinary boot). The host sees this nonce: the answer proves only that a
  holder of K answered after the nonce was made.

The root's program (``images/minimal/proof``) answers with one line::

    HARNESS-PROOF from=secret|fw_cfg mac=<HMAC-SHA256(K, "harness-proof/1 FROM NONCE")>

The way the nonce came is inside the MAC, so an answer to fw_cfg's nonce cannot be
relabelled as one from the table. The program answers only a nonce of 64 lowercase hex
digits, so the host cannot have the root MAC a message of its choosing. The judge here
is Python's ``hmac``; the guest computes the same with ``sha256sum`` over the padded
blocks, so the two are written apart.
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
#: The ways a nonce reaches the root.
SECRET, FW_CFG = "secret", "fw_cfg"
PROOF_LINE = re.compile(r"(?m)^HARNESS-PROOF from=(secret|fw_cfg) mac=([0-9a-f]{64})\s")
#: What the program prints when it has nothing to answer (no nonce, or not hex).
REFUSED_LINE = re.compile(r"HARNESS-PROOF refused: ([^\r\n]*)")


def program(text: str) -> bytes:
    """The root's proof program (``images/minimal/proof``) with the nonce's names in it."""
    named = text.replace("@NONCE_GUID@", str(NONCE_GUID))
    return named.replace("@FW_CFG_NAME@", FW_CFG_NAME).encode()


def fresh_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def message(source: str, nonce: str) -> bytes:
    """What the MAC covers: the protocol, the way the nonce came, the nonce."""
    return f"harness-proof/1 {source} {nonce}".encode()


def mac(key: bytes, source: str, nonce: str) -> str:
    return hmac.new(key, message(source, nonce), hashlib.sha256).hexdigest()


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
    """What the judge needs: this launch's nonce, the way it was given, the image's key.

    Attributes:
        nonce: 64 lowercase hex digits, fresh for this launch.
        source: :data:`SECRET` or :data:`FW_CFG`, the one way this launch gave it.
    """

    nonce: str
    key: bytes = field(repr=False)
    source: str = FW_CFG

    def expected(self) -> str:
        return mac(self.key, self.source, self.nonce)

    def judge(self, console: str, tail: str) -> str:
        """Judge the root's answer in *console* (the transcript so far).

        Raises:
            GuestVerdict: no answer, more than one, an answer from another way than
                this launch gave the nonce, or a MAC that does not verify.
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
        source, answer = answers[0]
        if source != self.source:
            raise GuestVerdict(
                f"The root answered a nonce from {source}; this launch gave its nonce "
                f"only by {self.source}, so the answer is to another launch's nonce.",
                "proof",
                tail,
            )
        if not hmac.compare_digest(answer, self.expected()):
            raise GuestVerdict(
                "The booted system's HARNESS-PROOF does not verify under the owner's key: "
                "whatever printed it is not the owner's root answering this launch.",
                "proof",
                tail,
            )
        return f"the root proved itself (HMAC of this launch's nonce, by {source})"
