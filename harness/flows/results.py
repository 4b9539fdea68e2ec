"""The nightly's ``results.json`` (harness-nightly/1) as typed records.

A :class:`Night` is what the run found: its cases, the inputs and the firmware it
built, the host; a :class:`Published` night adds what changed since the previous one,
which is what ``results.json`` holds. ``nightly.schema.json`` beside this module is
the format; docs/nightly-json.md explains it. Every record reads itself back with
``from_json``, refusing a broken field with an :class:`~harness.errors.InputError`.

The night's own verdict is a :class:`Verdict` here and keeps the words harness-nightly/1
has always used on disk (``pass``, ``fail``, ``infrastructure``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import InputError
from harness.records import Fields
from harness.verdict import Verdict

SCHEMA = "harness-nightly/1"
#: A case's outcome: a stage that could not run ends the night instead.
CASE_VERDICTS = (Verdict.PASSED, Verdict.FAILED, Verdict.SKIPPED)
#: The night's verdict and its word in results.json.
NIGHT_WORDS = {Verdict.PASSED: "pass", Verdict.FAILED: "fail", Verdict.ERROR: "infrastructure"}


class Suite(enum.StrEnum):
    """The stage a case belongs to (a JUnit testsuite each)."""

    SERIES = "series"
    BUILD = "build"
    BOOT = "boot"
    IMAGE = "image"  # a distribution's image, built for its boots


class LinkKind(enum.StrEnum):
    """Files a case links to, relative to the report directory."""

    TRANSCRIPT = "transcript"
    LOG = "log"
    MANIFEST = "manifest"


@dataclass(frozen=True)
class PatchInput:
    """One patch of a component's series, by file name and content."""

    file: str
    sha256: str


@dataclass(frozen=True)
class ComponentInputs:
    """What a component was built from: the pinned archive and the series on it."""

    version: str
    source: str  # the route the archive came by
    archive: str
    sha256: str
    patches: tuple[PatchInput, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "archive": self.archive,
            "sha256": self.sha256,
            "patches": [{"file": p.file, "sha256": p.sha256} for p in self.patches],
        }

    @classmethod
    def from_json(cls, f: Fields) -> ComponentInputs:
        patches = tuple(PatchInput(p.text("file"), p.text("sha256")) for p in f.records("patches"))
        return cls(
            f.text("version"), f.text("source"), f.text("archive"), f.text("sha256"), patches
        )


@dataclass(frozen=True)
class FirmwareBuilt:
    """The OVMF.fd the night booted."""

    sha256: str
    sev_launch_digest: str
    cache_key: str
    cached: bool  # served from the build cache
    manifest: str  # link in the report directory

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "sev_launch_digest": self.sev_launch_digest,
            "cache_key": self.cache_key,
            "cached": self.cached,
            "manifest": self.manifest,
        }

    @classmethod
    def from_json(cls, f: Fields) -> FirmwareBuilt:
        return cls(
            f.text("sha256"),
            f.text("sev_launch_digest"),
            f.text("cache_key"),
            f.boolean("cached"),
            f.text("manifest"),
        )


@dataclass(frozen=True)
class HostInfo:
    """What ran the boots (nothing, when the night ended before them)."""

    qemu: str | None = None  # its --version line and "(system)" or "(built)"
    accelerator: str | None = None  # "kvm" or "tcg", as probed
    kernel: str | None = None

    def to_json(self) -> dict[str, str]:
        data = {"qemu": self.qemu, "accelerator": self.accelerator, "kernel": self.kernel}
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_json(cls, f: Fields) -> HostInfo:
        return cls(
            f.optional_text("qemu"), f.optional_text("accelerator"), f.optional_text("kernel")
        )


@dataclass(frozen=True)
class CaseResult:
    """One JUnit test case of the night."""

    suite: Suite
    name: str
    outcome: Verdict
    seconds: float
    detail: str  # one line: the verdict, or why it failed or was skipped
    output: str = ""  # for a failure, the tail of its transcript or build log
    links: Mapping[LinkKind, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``suite/name``: how the comparison between nights names a case."""
        return f"{self.suite}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite.value,
            "name": self.name,
            "outcome": self.outcome.value,
            "seconds": self.seconds,
            "detail": self.detail,
            "output": self.output,
            "links": {kind.value: link for kind, link in self.links.items()},
        }

    @classmethod
    def from_json(cls, f: Fields) -> CaseResult:
        links = {}
        for kind, link in f.text_map("links").items():
            try:
                links[LinkKind(kind)] = link
            except ValueError:
                raise InputError(f"{f.where}: links has an unknown kind {kind!r}.") from None
        return cls(
            f.choice("suite", Suite),
            f.text("name"),
            f.choice("outcome", Verdict, CASE_VERDICTS),
            f.number("seconds"),
            f.text("detail"),
            f.text("output", ""),
            links,
        )


@dataclass(frozen=True)
class Night:
    """One night's findings, before they are compared with the previous night."""

    started: str  # UTC, YYYY-MM-DDTHH:MM:SSZ
    finished: str
    upstream: str  # "pinned", "head" or "master"
    verdict: Verdict  # PASSED, FAILED, or ERROR when the run could not complete
    infrastructure_error: str | None
    host: HostInfo
    components: Mapping[str, ComponentInputs]
    firmware: FirmwareBuilt | None
    cases: tuple[CaseResult, ...]
    timings: Mapping[str, float]  # seconds per stage
    notes: tuple[str, ...] = ()

    def count(self, outcome: Verdict) -> int:
        return sum(case.outcome is outcome for case in self.cases)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started": self.started,
            "finished": self.finished,
            "upstream": self.upstream,
            "verdict": NIGHT_WORDS[self.verdict],
            "infrastructure_error": self.infrastructure_error,
            "host": self.host.to_json(),
            "components": {name: comp.to_json() for name, comp in self.components.items()},
            "firmware": self.firmware.to_json() if self.firmware else None,
            "cases": [case.to_json() for case in self.cases],
            "timings": dict(self.timings),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "results.json") -> Night:
        """The night in a results.json (its changes are left out: see :class:`Published`).

        Raises:
            InputError: another schema, or a field missing or wrong (the message names it).
        """
        f = Fields(data, where)
        if (schema := f.text("schema")) != SCHEMA:
            raise InputError(f"{where}: schema {schema!r} is not {SCHEMA}.")
        word = f.text("verdict")
        verdict = next((v for v, w in NIGHT_WORDS.items() if w == word), None)
        if verdict is None:
            words = ", ".join(NIGHT_WORDS.values())
            raise InputError(f"{where}: 'verdict' is {word!r}, not one of {words}.")
        firmware = f.optional_record("firmware")
        return cls(
            started=f.text("started"),
            finished=f.text("finished"),
            upstream=f.text("upstream"),
            verdict=verdict,
            infrastructure_error=f.optional_text("infrastructure_error"),
            host=HostInfo.from_json(f.record("host")),
            components={
                name: ComponentInputs.from_json(c) for name, c in f.record_map("components").items()
            },
            firmware=FirmwareBuilt.from_json(firmware) if firmware else None,
            cases=tuple(CaseResult.from_json(c) for c in f.records("cases")),
            timings=f.number_map("timings"),
            notes=f.texts("notes", ()),
        )


def night_verdict(infrastructure_error: str | None, cases: tuple[CaseResult, ...]) -> Verdict:
    """ERROR when the run could not complete, else FAILED when a case failed."""
    if infrastructure_error:
        return Verdict.ERROR
    return Verdict.of(not any(case.outcome.failed for case in cases))


@dataclass(frozen=True)
class Changes:
    """What differs from the previous run (``previous`` None: there was none)."""

    previous: str | None
    newly_failing: list[str] = field(default_factory=list)
    newly_passing: list[str] = field(default_factory=list)
    new_cases: list[str] = field(default_factory=list)
    gone_cases: list[str] = field(default_factory=list)
    digest: tuple[str | None, str | None] | None = None
    upstream: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    series: Mapping[str, str] = field(default_factory=dict)  # component -> what changed

    @property
    def none(self) -> bool:
        return self.previous is not None and not (
            self.newly_failing
            or self.newly_passing
            or self.new_cases
            or self.gone_cases
            or self.digest
            or self.upstream
            or self.series
        )

    def lines(self) -> list[str]:
        if self.previous is None:
            return ["first run: nothing to compare with"]
        if self.none:
            return [f"no change since the run of {self.previous}"]
        out = []
        out += [f"newly failing: {c}" for c in self.newly_failing]
        out += [f"newly passing: {c}" for c in self.newly_passing]
        out += [f"new case: {c}" for c in self.new_cases]
        out += [f"case gone: {c}" for c in self.gone_cases]
        if self.digest:
            out.append(f"launch digest changed: {self.digest[0]} -> {self.digest[1]}")
        out += [f"upstream moved: {k} {a} -> {b}" for k, (a, b) in self.upstream.items()]
        out += [f"series changed: {k}: {what}" for k, what in self.series.items()]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "previous": self.previous,
            "none": self.none,
            "newly_failing": self.newly_failing,
            "newly_passing": self.newly_passing,
            "new_cases": self.new_cases,
            "gone_cases": self.gone_cases,
            "digest": list(self.digest) if self.digest else None,
            "upstream": {k: list(v) for k, v in self.upstream.items()},
            "series": dict(self.series),
        }

    @classmethod
    def from_json(cls, f: Fields) -> Changes:
        digest = f.data.get("digest")
        if digest is not None and not (
            isinstance(digest, list)
            and len(digest) == 2
            and all(d is None or isinstance(d, str) for d in digest)
        ):
            raise InputError(f"{f.where}: 'digest' must be null or [old, new], not {digest!r}.")
        upstream = {}
        for name, moved in f.record("upstream").data.items():
            if not (isinstance(moved, list) and len(moved) == 2):
                raise InputError(f"{f.where}: upstream.{name} must be [old, new].")
            upstream[name] = (str(moved[0]), str(moved[1]))
        return cls(
            previous=f.optional_text("previous"),
            newly_failing=list(f.texts("newly_failing")),
            newly_passing=list(f.texts("newly_passing")),
            new_cases=list(f.texts("new_cases")),
            gone_cases=list(f.texts("gone_cases")),
            digest=(digest[0], digest[1]) if digest else None,
            upstream=upstream,
            series=f.text_map("series"),
        )


@dataclass(frozen=True)
class Published:
    """A night and what changed since the previous one: the whole ``results.json``."""

    night: Night
    changes: Changes

    def to_json(self) -> dict[str, Any]:
        return {
            **self.night.to_json(),
            "changes": self.changes.to_json(),
            "changes_lines": self.changes.lines(),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "results.json") -> Published:
        """Raises: InputError: a field missing or wrong (the message names it)."""
        night = Night.from_json(data, where)
        return cls(night, Changes.from_json(Fields(data, where).record("changes")))
