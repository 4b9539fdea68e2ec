"""The nightly's reports: JUnit XML, a static HTML page, and what changed since the
previous run, each a pure function of the typed results (:mod:`harness.flows.results`).

A report can be re-rendered from any ``results.json`` in the history:
``Published.from_json`` reads it back.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET

from harness.flows.results import (
    NIGHT_WORDS,
    SCHEMA,
    CaseResult,
    Changes,
    Night,
    PatchInput,
    Published,
)
from harness.verdict import Verdict

__all__ = ["SCHEMA", "Changes", "compare", "junit", "page", "summary"]


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
    """JUnit XML as Jenkins, GitLab and the like read it: one testsuite per stage."""
    suites: dict[str, list[CaseResult]] = {}
    for case in night.cases:
        suites.setdefault(case.suite, []).append(case)
    root = ET.Element(
        "testsuites",
        name="harness nightly",
        tests=str(len(night.cases)),
        failures=str(night.count(Verdict.FAILED)),
        skipped=str(night.count(Verdict.SKIPPED)),
        time=f"{sum(c.seconds for c in night.cases):.1f}",
        timestamp=night.started,
    )
    for suite, cases in suites.items():
        el = ET.SubElement(
            root,
            "testsuite",
            name=suite,
            tests=str(len(cases)),
            failures=str(sum(c.outcome is Verdict.FAILED for c in cases)),
            skipped=str(sum(c.outcome is Verdict.SKIPPED for c in cases)),
            time=f"{sum(c.seconds for c in cases):.1f}",
        )
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


# -- HTML ---------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px;
text-align: left; vertical-align: top; } code { font-size: 12px; }
.passed { background: #e6f4ea; } .failed { background: #fce8e6; } .skipped { color: #777; }
#summary { font-size: 1.2em; font-weight: bold; }
#summary.pass { color: #137333; } #summary.fail, #summary.infrastructure { color: #a50e0e; }
pre { background: #f6f6f6; padding: 6px; max-width: 100em; overflow-x: auto; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _link(href: str, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>'


def page(published: Published) -> str:
    """A static page: verdict, changes, every case, the firmware, the inputs, timings."""
    night, word = published.night, NIGHT_WORDS[published.night.verdict]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>harness nightly {_e(night.started)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Nightly firmware regression, {_e(night.started)} "
        f"(upstream: {_e(night.upstream)})</h1>",
        f'<p id="summary" class="{_e(word)}">{_e(summary(night))}</p>',
        '<h2>Since the previous run</h2><ul id="changes">',
        *(f"<li>{_e(line)}</li>" for line in published.changes.lines()),
        "</ul>",
        *(
            ['<h2>Notes</h2><ul id="notes">', *(f"<li>{_e(n)}</li>" for n in night.notes), "</ul>"]
            if night.notes
            else []
        ),
        '<h2>Cases</h2><table id="cases"><tr><th>stage</th><th>case</th><th>result</th>'
        "<th>seconds</th><th>detail</th><th>files</th></tr>",
    ]
    for case in night.cases:
        links = " ".join(_link(href, k) for k, href in case.links.items())
        detail = _e(case.detail)
        if case.outcome is Verdict.FAILED and case.output:
            detail += f"<pre>{_e(case.output)}</pre>"
        parts.append(
            f'<tr class="{_e(case.outcome)}"><td>{_e(case.suite)}</td>'
            f"<td>{_e(case.name)}</td><td>{_e(case.outcome)}</td>"
            f"<td>{case.seconds:.1f}</td><td>{detail}</td><td>{links}</td></tr>"
        )
    parts.append("</table>")
    fw = night.firmware
    if fw:
        parts += [
            '<h2>Firmware</h2><table id="firmware">',
            f"<tr><th>file</th><td>{_link(fw.manifest, 'manifest.json')}</td></tr>",
            f"<tr><th>sha256</th><td><code>{_e(fw.sha256)}</code></td></tr>",
            f"<tr><th>SEV launch digest</th><td><code>{_e(fw.sev_launch_digest)}</code>"
            + (
                " (the image's SHA-256: no kernel is measured with it)"
                if fw.sev_launch_digest == fw.sha256
                else ""
            )
            + "</td></tr>",
            f"<tr><th>from the build cache</th><td>{_e('yes' if fw.cached else 'no')}</td></tr>",
            "</table>",
        ]
    parts.append(
        '<h2>Inputs</h2><table id="inputs"><tr><th>component</th><th>version</th>'
        "<th>source</th><th>archive sha256</th><th>patches</th></tr>"
    )
    for name, comp in night.components.items():
        patches = "<br>".join(
            f"{_e(p.file)} <code>{_e(p.sha256[:12])}</code>" for p in comp.patches
        )
        parts.append(
            f"<tr><td>{_e(name)}</td><td>{_e(comp.version)}</td><td>{_e(comp.source)}</td>"
            f"<td><code>{_e(comp.sha256)}</code></td><td>{patches or '(none)'}</td></tr>"
        )
    parts.append("</table>")
    host = night.host.to_json()
    if host:
        parts.append('<h2>Host</h2><table id="host">')
        parts += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in host.items()]
        parts.append("</table>")
    parts.append('<h2>Time</h2><table id="timings">')
    parts += [f"<tr><th>{_e(k)}</th><td>{v:.1f} s</td></tr>" for k, v in night.timings.items()]
    parts += [
        "</table>",
        f"<p>{_link('results.json', 'results.json')} · {_link('junit.xml', 'junit.xml')}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
