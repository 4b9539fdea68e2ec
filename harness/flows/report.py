"""The nightly's reports: ``results.json`` (harness-nightly/1), JUnit XML, a static HTML
page, and what changed since the previous run.

Everything here is a pure function of the results (plain JSON data), so a report can be
re-rendered from any ``results.json`` in the history.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "harness-nightly/1"

Results = dict[str, Any]


@dataclass(frozen=True)
class Changes:
    """What differs from the previous run (None: there was no previous run)."""

    previous: str | None
    newly_failing: list[str] = field(default_factory=list)
    newly_passing: list[str] = field(default_factory=list)
    new_cases: list[str] = field(default_factory=list)
    gone_cases: list[str] = field(default_factory=list)
    digest: tuple[str | None, str | None] | None = None
    upstream: dict[str, tuple[str, str]] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict)  # component -> what changed

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

    def as_json(self) -> dict[str, Any]:
        return {
            "previous": self.previous,
            "none": self.none,
            "newly_failing": self.newly_failing,
            "newly_passing": self.newly_passing,
            "new_cases": self.new_cases,
            "gone_cases": self.gone_cases,
            "digest": list(self.digest) if self.digest else None,
            "upstream": {k: list(v) for k, v in self.upstream.items()},
            "series": self.series,
        }


def case_key(case: dict[str, Any]) -> str:
    return f"{case['suite']}/{case['name']}"


def compare(previous: Results | None, current: Results) -> Changes:
    if previous is None:
        return Changes(None)
    before = {case_key(c): c["outcome"] for c in previous["cases"]}
    now = {case_key(c): c["outcome"] for c in current["cases"]}
    old_digest = (previous.get("firmware") or {}).get("sev_launch_digest")
    new_digest = (current.get("firmware") or {}).get("sev_launch_digest")
    upstream = {
        name: (previous["components"][name]["version"], comp["version"])
        for name, comp in current["components"].items()
        if name in previous["components"]
        and previous["components"][name]["version"] != comp["version"]
    }
    series = {
        name: what
        for name, comp in current["components"].items()
        if name in previous["components"]
        and (what := _series_change(previous["components"][name]["patches"], comp["patches"]))
    }
    return Changes(
        previous=previous["started"],
        newly_failing=[k for k, v in now.items() if v == "failed" and before.get(k) != "failed"],
        newly_passing=[k for k, v in now.items() if v == "passed" and before.get(k) == "failed"],
        new_cases=[k for k in now if k not in before],
        gone_cases=[k for k in before if k not in now],
        digest=(old_digest, new_digest) if old_digest != new_digest else None,
        upstream=upstream,
        series=series,
    )


def _series_change(before: list[dict[str, str]], after: list[dict[str, str]]) -> str:
    """ "added X; changed Y; removed Z" between two patch lists, or "" when equal."""
    old = {p["file"]: p["sha256"] for p in before}
    new = {p["file"]: p["sha256"] for p in after}
    parts = [
        ("added", [f for f in new if f not in old]),
        ("changed", [f for f in new if f in old and old[f] != new[f]]),
        ("removed", [f for f in old if f not in new]),
    ]
    text = "; ".join(f"{verb} {', '.join(files)}" for verb, files in parts if files)
    if not text and list(old) != list(new):
        text = "reordered"
    return text


def counts(results: Results) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "skipped": 0}
    for case in results["cases"]:
        out[case["outcome"]] += 1
    return out


def summary(results: Results) -> str:
    n = counts(results)
    verdict = results["verdict"].upper()
    text = f"{verdict}: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped"
    if results.get("infrastructure_error"):
        text += f"; the run could not complete: {results['infrastructure_error']}"
    return text


# -- JUnit --------------------------------------------------------------------------


def junit(results: Results) -> bytes:
    """JUnit XML as Jenkins, GitLab and the like read it: one testsuite per stage."""
    suites: dict[str, list[dict[str, Any]]] = {}
    for case in results["cases"]:
        suites.setdefault(case["suite"], []).append(case)
    n = counts(results)
    root = ET.Element(
        "testsuites",
        name="harness nightly",
        tests=str(len(results["cases"])),
        failures=str(n["failed"]),
        skipped=str(n["skipped"]),
        time=f"{sum(c['seconds'] for c in results['cases']):.1f}",
        timestamp=results["started"],
    )
    for suite, cases in suites.items():
        el = ET.SubElement(
            root,
            "testsuite",
            name=suite,
            tests=str(len(cases)),
            failures=str(sum(c["outcome"] == "failed" for c in cases)),
            skipped=str(sum(c["outcome"] == "skipped" for c in cases)),
            time=f"{sum(c['seconds'] for c in cases):.1f}",
        )
        for case in cases:
            tc = ET.SubElement(
                el,
                "testcase",
                classname=f"nightly.{suite}",
                name=case["name"],
                time=f"{case['seconds']:.1f}",
            )
            if case["outcome"] == "failed":
                failure = ET.SubElement(tc, "failure", message=case["detail"])
                failure.text = case.get("output") or case["detail"]
            elif case["outcome"] == "skipped":
                ET.SubElement(tc, "skipped", message=case["detail"])
            links = case.get("links") or {}
            if links:
                out = ET.SubElement(tc, "system-out")
                out.text = "\n".join(f"{k}: {v}" for k, v in links.items())
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


def page(results: Results) -> str:
    """A static page: verdict, changes, every case, the firmware, the inputs, timings."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>harness nightly {_e(results['started'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Nightly firmware regression, {_e(results['started'])} "
        f"(upstream: {_e(results['upstream'])})</h1>",
        f'<p id="summary" class="{_e(results["verdict"])}">{_e(summary(results))}</p>',
        '<h2>Since the previous run</h2><ul id="changes">',
        *(f"<li>{_e(line)}</li>" for line in results["changes_lines"]),
        "</ul>",
        *(
            ['<h2>Notes</h2><ul id="notes">', *(f"<li>{_e(n)}</li>" for n in notes), "</ul>"]
            if (notes := results.get("notes"))
            else []
        ),
        '<h2>Cases</h2><table id="cases"><tr><th>stage</th><th>case</th><th>result</th>'
        "<th>seconds</th><th>detail</th><th>files</th></tr>",
    ]
    for case in results["cases"]:
        links = " ".join(_link(href, k) for k, href in (case.get("links") or {}).items())
        detail = _e(case["detail"])
        if case["outcome"] == "failed" and case.get("output"):
            detail += f"<pre>{_e(case['output'])}</pre>"
        parts.append(
            f'<tr class="{_e(case["outcome"])}"><td>{_e(case["suite"])}</td>'
            f"<td>{_e(case['name'])}</td><td>{_e(case['outcome'])}</td>"
            f"<td>{case['seconds']:.1f}</td><td>{detail}</td><td>{links}</td></tr>"
        )
    parts.append("</table>")
    fw = results.get("firmware")
    if fw:
        parts += [
            '<h2>Firmware</h2><table id="firmware">',
            f"<tr><th>file</th><td>{_link(fw['manifest'], 'manifest.json')}</td></tr>",
            f"<tr><th>sha256</th><td><code>{_e(fw['sha256'])}</code></td></tr>",
            f"<tr><th>SEV launch digest</th><td><code>{_e(fw['sev_launch_digest'])}</code>"
            + (
                " (the image's SHA-256: no kernel is measured with it)"
                if fw["sev_launch_digest"] == fw["sha256"]
                else ""
            )
            + "</td></tr>",
            f"<tr><th>from the build cache</th><td>{_e('yes' if fw['cached'] else 'no')}</td></tr>",
            "</table>",
        ]
    parts.append(
        '<h2>Inputs</h2><table id="inputs"><tr><th>component</th><th>version</th>'
        "<th>source</th><th>archive sha256</th><th>patches</th></tr>"
    )
    for name, comp in results["components"].items():
        patches = "<br>".join(
            f"{_e(p['file'])} <code>{_e(p['sha256'][:12])}</code>" for p in comp["patches"]
        )
        parts.append(
            f"<tr><td>{_e(name)}</td><td>{_e(comp['version'])}</td><td>{_e(comp['source'])}</td>"
            f"<td><code>{_e(comp['sha256'])}</code></td><td>{patches or '(none)'}</td></tr>"
        )
    parts.append("</table>")
    host = results.get("host") or {}
    if host:
        parts.append('<h2>Host</h2><table id="host">')
        parts += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in host.items()]
        parts.append("</table>")
    parts.append('<h2>Time</h2><table id="timings">')
    parts += [f"<tr><th>{_e(k)}</th><td>{v:.1f} s</td></tr>" for k, v in results["timings"].items()]
    parts += [
        "</table>",
        f"<p>{_link('results.json', 'results.json')} · {_link('junit.xml', 'junit.xml')}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
