"""The disk passphrase: read once, one rule for line endings, never printed.

Every reader (``build-image``, ``sev.secret``, ``boot``, the matrix, the scenarios) goes
through :class:`Passphrase`, so the bytes cryptsetup puts in the LUKS key slot are the
bytes the guest owner injects and the bytes typed at GRUB's prompt.

The rule for a passphrase file: exactly one final ``\\n`` or ``\\r\\n`` is dropped (the
line end an editor adds), nothing else. What is left must be non-empty, hold no NUL
(GRUB and the secret entry treat the passphrase as a C string) and must not itself end
in CR or LF: a file ending in two line ends is ambiguous, so it is refused rather than
guessed at. Because a passphrase never ends in a line end, writing it raw and reading the
file again gives the same bytes, and the raw file is what ``cryptsetup --key-file``
takes (cryptsetup uses a key file's every byte, newline included).

The bytes need not be UTF-8. GRUB's prompt, however, only takes printable ASCII
(``grub_password_get`` drops every key that is not ``grub_isprint``), so a passphrase
with other bytes can only ever be unlocked by the injected secret; :attr:`typable` says
which kind this is.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, InputError
from harness.files import read_private

#: What GRUB's passphrase prompt keeps of a key: ``grub_isprint``, space to tilde.
TYPABLE = frozenset(range(0x20, 0x7F))
#: Bytes of a generated passphrase: 18 random bytes, URL-safe base64 (typable).
GENERATED_BYTES = 18


@dataclass(frozen=True)
class Passphrase:
    """A disk passphrase; ``repr`` and ``str`` never show it.

    Raises:
        InputError: empty, holding a NUL, or ending in CR or LF.
    """

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.value:
            raise InputError("The passphrase is empty.")
        if b"\0" in self.value:
            raise InputError("The passphrase contains a NUL byte, where GRUB would cut it.")
        if self.value.endswith((b"\n", b"\r")):
            raise InputError(
                "The passphrase ends in a line break after removing the file's final "
                "line end; remove the extra line break."
            )

    def __repr__(self) -> str:
        return "Passphrase(<redacted>)"

    @classmethod
    def parse(cls, data: bytes) -> Passphrase:
        """The passphrase held by a file's *data*: one final ``\\n`` or ``\\r\\n`` dropped."""
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        return cls(data)

    @classmethod
    def read(cls, path: str | Path) -> Passphrase:
        """Read a passphrase file once.

        Raises:
            InputError: the file is missing or unreadable, group or others may read it,
                or its passphrase is refused (the message names the file).
        """
        data = read_private(Path(path), "passphrase")
        try:
            return cls.parse(data)
        except InputError as err:
            raise InputError(f"{path}: {err.message}", hint=err.hint) from err

    @classmethod
    def generate(cls) -> Passphrase:
        return cls(secrets.token_urlsafe(GENERATED_BYTES).encode())

    @property
    def typable(self) -> bool:
        """Whether GRUB's prompt can take it: printable ASCII only."""
        return all(b in TYPABLE for b in self.value)

    def require_typable(self) -> None:
        """Refuse a passphrase that the fallback prompt could never take.

        Raises:
            ConfigError: a byte outside printable ASCII.
        """
        if not self.typable:
            raise ConfigError(
                "The passphrase holds bytes GRUB's prompt cannot type (only printable "
                "ASCII is taken), so without the injected secret the disk could not be "
                "unlocked.",
                hint="use a printable ASCII passphrase, or --secret-only to accept that",
            )

    def typed(self) -> str:
        """The keystrokes that enter it at GRUB's prompt.

        Raises:
            ConfigError: it cannot be typed.
        """
        self.require_typable()
        return self.value.decode("ascii")
