"""The SEV guest policy, and what the guest owner accepts of a launch.

AMD SEV API (publication 55766), "Guest Policy"::

    bit  0      NODBG     debugging of the guest is disallowed
    bit  1      NOKS      sharing keys with other guests is disallowed
    bit  2      ES        SEV-ES is required
    bit  3      NOSEND    sending the guest to another platform is disallowed
    bit  4      DOMAIN    the guest must not leave the domain
    bit  5      SEV       the guest must not go to a platform without SEV
    bits 6-15   reserved, must be zero
    bits 16-23  API_MAJOR \\ the oldest firmware the guest may be sent to
    bits 24-31  API_MINOR /

The launch measurement binds the policy, so once it verifies the owner knows the
platform really enforces it; this module decides whether the owner wants such a guest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.errors import ConfigError, VerificationError


class PolicyFlag(enum.IntFlag):
    NODBG = 1 << 0
    NOKS = 1 << 1
    ES = 1 << 2
    NOSEND = 1 << 3
    DOMAIN = 1 << 4
    SEV = 1 << 5


FLAGS_MASK = 0x3F
NO_FLAGS = PolicyFlag(0)
RESERVED_MASK = 0xFFC0
API_MAJOR_SHIFT = 16
API_MINOR_SHIFT = 24


@dataclass(frozen=True)
class GuestPolicy:
    """The 32-bit guest policy, field by field."""

    flags: PolicyFlag
    api_major: int = 0
    api_minor: int = 0

    @classmethod
    def parse(cls, value: int) -> GuestPolicy:
        """Split a policy word into its fields.

        Raises:
            ConfigError: it does not fit in 32 bits, or sets a reserved bit (named).
        """
        if not 0 <= value <= 0xFFFFFFFF:
            raise ConfigError(f"The policy must fit in 32 bits, not {value:#x}.")
        if value & RESERVED_MASK:
            bits = [str(b) for b in range(6, 16) if value >> b & 1]
            raise ConfigError(
                f"The policy {value:#x} sets reserved bit{'s' if len(bits) > 1 else ''} "
                f"{', '.join(bits)}; bits 6-15 must be zero."
            )
        return cls(
            PolicyFlag(value & FLAGS_MASK),
            value >> API_MAJOR_SHIFT & 0xFF,
            value >> API_MINOR_SHIFT & 0xFF,
        )

    @property
    def value(self) -> int:
        return (
            int(self.flags) | self.api_major << API_MAJOR_SHIFT | self.api_minor << API_MINOR_SHIFT
        )

    def __str__(self) -> str:
        """``0x5 (NODBG|ES, API >= 0.0)``: the word, its bits by name, the oldest API."""
        names = "|".join(f.name for f in PolicyFlag if f in self.flags and f.name) or "none"
        return f"{self.value:#x} ({names}, API >= {self.api_major}.{self.api_minor})"


#: What each flag the owner may require keeps the host from doing.
FLAG_MEANING = {
    PolicyFlag.NODBG: "debugging the guest (reading its memory)",
    PolicyFlag.NOKS: "sharing the guest's key with other guests",
    PolicyFlag.ES: "running it without SEV-ES (its registers unencrypted)",
    PolicyFlag.NOSEND: "migrating the guest to another platform",
    PolicyFlag.DOMAIN: "sending the guest outside its domain",
    PolicyFlag.SEV: "sending the guest to a platform without SEV",
}


def parse_flags(text: str) -> PolicyFlag:
    """``NOKS,NOSEND`` as given to --require (case-insensitive; empty for none).

    Raises:
        ConfigError: a name that is no policy flag.
    """
    flags = PolicyFlag(0)
    for name in filter(None, (part.strip().upper() for part in text.split(","))):
        try:
            flags |= PolicyFlag[name]
        except KeyError as err:
            known = ", ".join(f.name for f in PolicyFlag if f.name)
            raise ConfigError(f"--require {name!r} is no policy flag; known: {known}.") from err
    return flags


class LaunchMode(enum.StrEnum):
    """What the guest is launched as, which decides how its launch digest is made."""

    #: SEV: firmware (+ kernel hashes), SHA-256.
    SEV = "sev"
    #: SEV-ES: the same, then one VMSA page per vCPU.
    SEV_ES = "seves"
    #: SEV-SNP: the SHA-384 page-info chain (a different policy format, never chosen
    #: from an SEV policy word).
    SNP = "snp"

    @classmethod
    def from_policy(cls, policy: int) -> LaunchMode:
        """SEV or SEV-ES, as the ES bit (2) of an SEV guest policy says.

        Raises:
            ConfigError: the policy is malformed (see :meth:`GuestPolicy.parse`).
        """
        return cls.SEV_ES if PolicyFlag.ES in GuestPolicy.parse(policy).flags else cls.SEV

    @classmethod
    def parse(cls, text: str) -> LaunchMode:
        """--mode as typed (sev, seves or snp; sev-es and sev-snp are accepted too).

        Raises:
            ConfigError: none of these.
        """
        spelled = {"sev-es": cls.SEV_ES, "sev-snp": cls.SNP}
        try:
            return spelled.get(text.lower()) or cls(text.lower())
        except ValueError as err:
            raise ConfigError(f"--mode {text!r} is not one of sev, seves, snp.") from err

    @property
    def has_vmsa(self) -> bool:
        """The digest covers the vCPUs' initial state."""
        return self is not LaunchMode.SEV


def parse_version(text: str) -> tuple[int, int]:
    """``MAJOR.MINOR`` as given to --min-api."""
    major, sep, minor = text.partition(".")
    if not (sep and major.isdigit() and minor.isdigit()):
        raise ConfigError(f"--min-api {text!r} is not of the form MAJOR.MINOR (e.g. 1.49).")
    return int(major), int(minor)


@dataclass(frozen=True)
class LaunchRules:
    """What the guest owner requires of a launch before it gives the guest a secret.

    Attributes:
        allow_debug: accept a policy without NODBG (the host could then read the
            guest's memory through the debug commands).
        min_api: the oldest SEV API version (major, minor) the platform may run.
        min_build: the oldest firmware build the platform may run.
        required: flags the policy must set besides NODBG (e.g. NOKS, NOSEND): what the
            owner did not ask for the host may not allow.
    """

    allow_debug: bool = False
    min_api: tuple[int, int] = (0, 0)
    min_build: int = 0
    required: PolicyFlag = NO_FLAGS

    def check(self, policy: int, api: tuple[int, int], build: int) -> None:
        """Refuse a policy or platform the owner does not accept, saying why.

        Raises:
            ConfigError: a reserved policy bit.
            VerificationError: no NODBG without allow_debug, or an older platform.
        """
        parsed = GuestPolicy.parse(policy)
        if PolicyFlag.NODBG not in parsed.flags and not self.allow_debug:
            raise VerificationError(
                f"The policy {policy:#x} lacks bit 0 (NODBG): the host could debug the "
                "guest and read its memory, so no secret is given.",
                hint="--allow-debug accepts a debuggable guest on purpose",
            )
        if missing := self.required & ~parsed.flags:
            bit = next(f for f in PolicyFlag if f in missing)
            raise VerificationError(
                f"The policy {parsed} lacks {bit.name} (bit {int(bit).bit_length() - 1}), "
                f"which the owner requires: it would allow {FLAG_MEANING[bit]}, so no secret "
                "is given."
            )
        if api < self.min_api:
            raise VerificationError(
                f"The platform runs SEV API {api[0]}.{api[1]}, older than the required "
                f"{self.min_api[0]}.{self.min_api[1]}."
            )
        if build < self.min_build:
            raise VerificationError(
                f"The platform's SEV firmware build {build} is older than the required "
                f"{self.min_build}."
            )
