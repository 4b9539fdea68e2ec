"""One spelling of pass and fail for every stage: boots, patch checks, the nightly.

A boot's result, a ``patches.check`` line and a nightly case all carry a
:class:`Verdict`; text users read ("PASS", "FAIL") and the words of older JSON formats
are derived from it where they are written, never stored beside it.
"""

from __future__ import annotations

import enum


class Verdict(enum.StrEnum):
    """How a check, a boot or a run ended.

    ``ERROR`` is infrastructure: the check could not run (Docker down, a download
    missing), which says nothing about the thing checked.
    """

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"

    @classmethod
    def of(cls, passed: bool) -> Verdict:
        return cls.PASSED if passed else cls.FAILED

    @property
    def ok(self) -> bool:
        """It passed (a skip is not a pass)."""
        return self is Verdict.PASSED

    @property
    def failed(self) -> bool:
        """It failed, or could not run: either way a run with it is not green."""
        return self in (Verdict.FAILED, Verdict.ERROR)

    @property
    def short(self) -> str:
        """The word a console line starts with: PASS, FAIL, SKIP or ERROR."""
        return _SHORT[self]


_SHORT = {
    Verdict.PASSED: "PASS",
    Verdict.FAILED: "FAIL",
    Verdict.SKIPPED: "SKIP",
    Verdict.ERROR: "ERROR",
}
