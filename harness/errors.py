"""Every error the harness raises on purpose.

Hierarchy::

    HarnessError                   root; carries a one-sentence message and a hint
    ├── InputError                 the user gave us something unusable (exit 2)
    │   ├── FirmwareFormatError    bytes that are not a (well-formed) firmware image
    │   ├── SecretFormatError      a secret table or packet that breaks its format
    │   ├── ConfigError            bad option values or combinations
    │   ├── ChecksumError          downloaded bytes that do not match their pin
    │   └── PatchError             a patch of a series that does not apply
    ├── VerificationError          a check of what we were given failed (exit 1); raised
    │   │                          itself when a launch measurement or MAC does not match
    │   ├── GuestVerdict           a guest did what its scenario forbids
    │   ├── BootFailed             a scenario's boot did not pass
    │   ├── PatchCheckFailed       a patch series failed one of its checks
    │   └── BuildRefused           a build ran, but what it made fails its component's
    │                              checks (a kernel configuration value not kept)
    └── InfrastructureError        the machine cannot do the job (exit 3)
        ├── CommandError           a subprocess failed: command, status, output tail
        └── PrerequisiteError      a host tool, Docker engine or accelerator is missing

Input and verification errors are verdicts about what we were given; infrastructure
errors say the run itself could not happen. Callers (and schedulers) tell them apart by
class and by exit status.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of the harness's errors.

    Args:
        message: one sentence saying what went wrong.
        hint: optional sentence saying what to do about it.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class InputError(HarnessError):
    """Unusable input from the user."""

    exit_code = 2


class FirmwareFormatError(InputError):
    """A firmware image, or a structure inside it, is malformed."""


class SecretFormatError(InputError):
    """A secret table or launch-secret packet breaks its format."""


class ConfigError(InputError):
    """Option values that cannot work, alone or together."""


class ChecksumError(InputError):
    """Downloaded bytes do not match the pin."""


class PatchError(InputError):
    """A patch of the series does not apply."""


class VerificationError(HarnessError):
    """Something we were given failed its check: a measurement or MAC that does not
    verify, a guest that misbehaved, a series that fails its checks."""

    exit_code = 1


class GuestVerdict(VerificationError):
    """The guest did something the scenario forbids (a test verdict, not infrastructure).

    Attributes:
        matched: which failure pattern (or "timeout"/"exited") ended the wait.
    """

    def __init__(self, message: str, matched: str, transcript_tail: str) -> None:
        super().__init__(f"{message}\n--- console (last lines) ---\n{transcript_tail}")
        self.matched = matched


class BootFailed(VerificationError):
    """A scenario's boot ended in a failed verdict (the report says why)."""


class PatchCheckFailed(VerificationError):
    """A patch series failed at least one of ``patches.check``'s checks."""


class BuildRefused(VerificationError):
    """A build ran to the end, but its output is not what the component must produce:
    a verdict on the sources and their configuration, like a compile error."""


class InfrastructureError(HarnessError):
    """The machine could not do the job; not a verdict on the firmware."""

    exit_code = 3


class CommandError(InfrastructureError):
    """A subprocess exited non-zero (or could not start).

    Attributes:
        argv: the command as run.
        returncode: its exit status (None when it could not start or timed out).
        output_tail: the last lines of its combined output.
        timed_out: it was killed for running out of time.
    """

    def __init__(
        self,
        message: str,
        *,
        argv: list[str],
        returncode: int | None,
        output_tail: str = "",
        hint: str | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail
        self.timed_out = timed_out

    def __str__(self) -> str:
        text = super().__str__()
        if self.output_tail:
            text += "\n  last output:\n" + "\n".join(
                "    " + line for line in self.output_tail.splitlines()
            )
        return text


class PrerequisiteError(InfrastructureError):
    """A host prerequisite is missing or unusable."""
