"""How one boot of a scenario ended, and its JSON (``result.schema.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.records import Fields
from harness.verdict import Verdict

#: Format of a boot result's JSON; ``result.schema.json`` beside this module describes it.
RESULT_SCHEMA = "harness-boot/1"


@dataclass(frozen=True)
class Result:
    """How one boot of a scenario ended: its verdict, why, and where its transcript is.

    A boot has a verdict of passed or failed; it never is skipped or an error (a boot
    that could not run raises instead).
    """

    scenario: str
    variant: str
    outcome: Verdict
    detail: str
    seconds: float
    transcript: Path
    notes: tuple[str, ...] = ()
    #: Where the seconds went, stage by stage (:mod:`harness.boots.phases`).
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "scenario": self.scenario,
            "variant": self.variant,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "seconds": self.seconds,
            "transcript": str(self.transcript),
            "notes": list(self.notes),
            "phases": dict(self.phases),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "boot result") -> Result:
        """Raises: InputError: a field is missing or wrong (the message names it)."""
        f = Fields(data, where)
        if (schema := f.text("schema")) != RESULT_SCHEMA:
            raise InputError(f"{where}: schema {schema!r} is not {RESULT_SCHEMA}.")
        return cls(
            scenario=f.text("scenario"),
            variant=f.text("variant"),
            outcome=f.choice("outcome", Verdict, BOOT_VERDICTS),
            detail=f.text("detail"),
            seconds=f.number("seconds"),
            transcript=Path(f.text("transcript")),
            notes=f.texts("notes"),
            phases=f.number_map("phases"),
        )


#: The verdicts a boot can have.
BOOT_VERDICTS = (Verdict.PASSED, Verdict.FAILED)
