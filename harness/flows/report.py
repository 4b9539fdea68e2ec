"""The nightly's reports: JUnit XML, a static HTML page, and what changed since the
previous run, each a pure function of the typed results (:mod:`harness.flows.results`).

A report can be re-rendered from any ``results.json`` in the history:
``Published.from_json`` reads it back.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import jinja2

from harness.flows.results import (
    NIGHT_WORDS,
    SCHEMA,
    CaseResult,
    Changes,
    Night,
    PatchInput,
    Published,
    Suite,
)
from harness.verdict import Verdict

__all__ = ["SCHEMA", "Changes", "compare", "history_page", "junit", "page", "summary"]


def compare(previous: Night | None, current: Night) -> Changes:
    if previous is None:
        return Changes(None)
    before = {c.key: c.outcome for c in previous.cases}
    now = {c.key: c.outcome for c in current.cases}
    old_digest = previous.firmware.sev_launch_digest if previous.firmware else None
    new_digest = current.firmware.sev_launch_digest if current.firmware else None
    old = previous.components
    upstream = {
        name: (old[name].version, comp.version)
        for name, comp in current.components.items()
        if name in old and old[name].version != comp.version
    }
    series = {
        name: what
        for name, comp in current.components.items()
        if name in old and (what := _series_change(old[name].patches, comp.patches))
    }
    failed, passed = Verdict.FAILED, Verdict.PASSED
    return Changes(
        previous=previous.started,
        newly_failing=[k for k, v in now.items() if v is failed and before.get(k) is not failed],
        newly_passing=[k for k, v in now.items() if v is passed and before.get(k) is failed],
        new_cases=[k for k in now if k not in before],
        gone_cases=[k for k in before if k not in now],
        digest=(old_digest, new_digest) if old_digest != new_digest else None,
        upstream=upstream,
        series=series,
    )


def _series_change(before: tuple[PatchInput, ...], after: tuple[PatchInput, ...]) -> str:
    """ "added X; changed Y; removed Z" between two patch lists, or "" when equal."""
    old = {p.file: p.sha256 for p in before}
    new = {p.file: p.sha256 for p in after}
    parts = [
        ("added", [f for f in new if f not in old]),
        ("changed", [f for f in new if f in old and old[f] != new[f]]),
        ("removed", [f for f in old if f not in new]),
    ]
    text = "; ".join(f"{verb} {', '.join(files)}" for verb, files in parts if files)
    if not text and list(old) != list(new):
        text = "reordered"
    return text


def summary(night: Night) -> str:
    n = {v: night.count(v) for v in (Verdict.PASSED, Verdict.FAILED, Verdict.SKIPPED)}
    text = (
        f"{NIGHT_WORDS[night.verdict].upper()}: {n[Verdict.PASSED]} passed, "
        f"{n[Verdict.FAILED]} failed, {n[Verdict.SKIPPED]} skipped"
    )
    if night.infrastructure_error:
        text += f"; the run could not complete: {night.infrastructure_error}"
    return text


# -- JUnit --------------------------------------------------------------------------


def junit(night: Night) -> bytes:
    """JUnit XML as Jenkins, GitLab and the like read it: one testsuite per stage.

    A night that could not complete is an ``<error>`` (counted in ``errors=``), never an
    empty suite that reads as green (a case is passed, failed or skipped: what could not
    run ends the night). The firmware the night booted is named by its sha256 and launch
    digest (``<properties>``).
    """
    suites: dict[str, list[CaseResult]] = {}
    for case in night.cases:
        suites.setdefault(case.suite, []).append(case)
    errors = 1 if night.infrastructure_error else 0
    root = ET.Element(
        "testsuites",
        name="harness nightly",
        tests=str(len(night.cases) + (1 if night.infrastructure_error else 0)),
        failures=str(night.count(Verdict.FAILED)),
        errors=str(errors),
        skipped=str(night.count(Verdict.SKIPPED)),
        time=f"{sum(c.seconds for c in night.cases):.1f}",
        timestamp=night.started,
    )
    if night.infrastructure_error:
        el = ET.SubElement(
            root, "testsuite", name="run", tests="1", failures="0", errors="1", skipped="0"
        )
        _properties(el, night)
        tc = ET.SubElement(el, "testcase", classname="nightly.run", name="the night completes")
        error = ET.SubElement(tc, "error", message=night.infrastructure_error)
        error.text = night.infrastructure_error
    for suite, cases in suites.items():
        el = ET.SubElement(
            root,
            "testsuite",
            name=suite,
            tests=str(len(cases)),
            failures=str(sum(c.outcome is Verdict.FAILED for c in cases)),
            errors="0",
            skipped=str(sum(c.outcome is Verdict.SKIPPED for c in cases)),
            time=f"{sum(c.seconds for c in cases):.1f}",
        )
        _properties(el, night)
        for case in cases:
            tc = ET.SubElement(
                el,
                "testcase",
                classname=f"nightly.{suite}",
                name=case.name,
                time=f"{case.seconds:.1f}",
            )
            if case.outcome is Verdict.FAILED:
                failure = ET.SubElement(tc, "failure", message=case.detail)
                failure.text = case.output or case.detail
            elif case.outcome is Verdict.SKIPPED:
                ET.SubElement(tc, "skipped", message=case.detail)
            if case.links:
                out = ET.SubElement(tc, "system-out")
                out.text = "\n".join(f"{k}: {v}" for k, v in case.links.items())
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _properties(suite: ET.Element, night: Night) -> None:
    """What the night ran on, as each testsuite's properties (JUnit puts them there)."""
    props = ET.SubElement(suite, "properties")
    values = {"upstream": night.upstream, "started": night.started}
    if night.firmware is not None:
        values["firmware.sha256"] = night.firmware.sha256
        values["firmware.sev_launch_digest"] = night.firmware.sev_launch_digest
    for name, value in values.items():
        ET.SubElement(props, "property", name=name, value=value)


# -- HTML ---------------------------------------------------------------------------

TEMPLATES = Path(__file__).with_name("templates")
#: Autoescaping on: every value the pages show is the guests' or the builds' text.
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
#: The Debian variant's cases end with this (their seconds are the boot to login).
DEBIAN_CASE_SUFFIX = "-debian-luks1"


def page(published: Published, history_href: str | None = None) -> str:
    """A static page: verdict, changes, every case, the Debian boots to login, the
    firmware, the inputs, timings; *history_href* links the history page."""
    night = published.night
    return _ENV.get_template("report.html.j2").render(
        night=night,
        word=NIGHT_WORDS[night.verdict],
        summary=summary(night),
        changes=published.changes.lines(),
        logins=[
            c for c in night.cases if c.suite is Suite.BOOT and c.name.endswith(DEBIAN_CASE_SUFFIX)
        ],
        fw=night.firmware,
        host=night.host.to_json(),
        history_href=history_href,
    )


# -- history ------------------------------------------------------------------------

#: Nights the history page shows (and whose transcripts the history keeps).
HISTORY_NIGHTS = 30
MARKS = {Verdict.PASSED: "✓", Verdict.FAILED: "✗", Verdict.SKIPPED: "-"}


@dataclass(frozen=True)
class Kept:
    """One night of the history: its id (the results file's stem after ``results-``),
    its results, and which of its files the history holds (relative to the history)."""

    id: str
    night: Night
    files: frozenset[str]

    @property
    def label(self) -> str:
        return self.night.started[5:16].replace("T", " ")  # MM-DD HH:MM


@dataclass(frozen=True)
class Cell:
    outcome: str
    mark: str
    title: str
    href: str | None


@dataclass(frozen=True)
class Row:
    case: str
    cells: list[Cell | None]


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    seconds: float
    outcome: str
    label: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    """One case's seconds across nights, oldest left, in the SVG's coordinates."""

    case: str
    points: list[Point]
    ticks: list[Tick]
    first: str
    last: str
    width: int = 280
    height: int = 120
    left: int = 40
    right: int = 270
    top: int = 8
    bottom: int = 100


def _case_name(case: CaseResult) -> str:
    return f"{case.suite}/{case.name}"


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above *value* (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= value))


def chart(case: str, series: list[tuple[Kept, CaseResult]]) -> Chart:
    """*series*: the nights the case ran, oldest first."""
    geometry = Chart(case, [], [], "", "")
    top = _nice_ceiling(max(max(c.seconds for _, c in series), 1.0))
    span_x = geometry.right - geometry.left
    span_y = geometry.bottom - geometry.top
    points = []
    for n, (kept, result) in enumerate(series):
        fraction = n / (len(series) - 1) if len(series) > 1 else 0.5
        points.append(
            Point(
                round(geometry.left + fraction * span_x, 1),
                round(geometry.bottom - result.seconds / top * span_y, 1),
                result.seconds,
                str(result.outcome),
                kept.label,
            )
        )
    ticks = [
        Tick(round(geometry.bottom - f * span_y, 1), f"{top * f:g} s") for f in (0.0, 0.5, 1.0)
    ]
    return dataclasses.replace(
        geometry, points=points, ticks=ticks, first=series[0][0].label, last=series[-1][0].label
    )


def history_page(kept: list[Kept]) -> str:
    """The history view, *kept* newest first: a grid of nights x cases (each cell linking
    to that night's transcript or log, when the history holds it) and, per case that
    takes time (an image build, a boot), a chart of its seconds across the nights."""
    names: list[str] = []
    for k in kept:
        for case in k.night.cases:
            if _case_name(case) not in names:
                names.append(_case_name(case))
    by_night = [{_case_name(c): c for c in k.night.cases} for k in kept]
    rows = []
    for name in names:
        cells: list[Cell | None] = []
        for k, cases in zip(kept, by_night, strict=True):
            found = cases.get(name)
            if found is None:
                cells.append(None)
                continue
            link = next(iter(found.links.values()), None)
            href = f"nights/{k.id}/{link}" if link and f"nights/{k.id}/{link}" in k.files else None
            title = f"{found.outcome}, {found.seconds:.1f} s: {found.detail}"
            cells.append(Cell(str(found.outcome), MARKS[found.outcome], title, href))
        rows.append(Row(name, cells))
    charts = []
    for name in names:
        series = [
            (k, cases[name])
            for k, cases in reversed(list(zip(kept, by_night, strict=True)))
            if name in cases
            and cases[name].outcome is not Verdict.SKIPPED
            and cases[name].suite in (Suite.BOOT, Suite.IMAGE)
        ]
        if series:
            charts.append(chart(name, series))
    passed = sum(1 for k in kept if k.night.verdict is Verdict.PASSED)
    return _ENV.get_template("history.html.j2").render(
        nights=kept,
        rows=rows,
        charts=charts,
        summary=f"{passed} of {len(kept)} nights passed; newest {kept[0].night.started}"
        if kept
        else "no night yet",
    )
