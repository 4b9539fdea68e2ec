"""The nightly's report renderers and the comparison with the previous run."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from typing import Any

from harness.flows import report
from harness.flows.results import Changes, Night, Published


def results(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": report.SCHEMA,
        "started": "2026-11-27T01:00:00Z",
        "finished": "2026-11-27T02:00:00Z",
        "upstream": "pinned",
        "verdict": "pass",
        "infrastructure_error": None,
        "host": {"qemu": "QEMU 7.2", "accelerator": "tcg"},
        "components": {
            "grub": {"version": "2.14", "source": "Debian", "archive": "g.tar.xz",
                     "sha256": "aa" * 32,
                     "patches": [{"file": "0001-x.patch", "sha256": "bb" * 32}]},
        },
        "firmware": {"sha256": "cc" * 32, "sev_launch_digest": "dd" * 32, "cached": True,
                     "cache_key": "ee" * 32, "manifest": "manifest.json"},
        "cases": [
            {"suite": "series", "name": "grub: series applies", "outcome": "passed",
             "seconds": 0.1, "detail": "1 patch", "output": "", "links": {}},
            {"suite": "boot", "name": "passwordless-luks1", "outcome": "passed",
             "seconds": 5.0, "detail": "as expected", "output": "",
             "links": {"transcript": "transcripts/passwordless-luks1.log"}},
        ],
        "timings": {"build": 1.0, "boots": 5.0},
        "changes_lines": ["first run: nothing to compare with"],
    }  # fmt: skip
    base.update(changes)
    return base


def fail(res: dict[str, Any], index: int, output: str = "kernel panic <&>") -> dict[str, Any]:
    res = copy.deepcopy(res)
    res["cases"][index].update(outcome="failed", detail="guest did <b>not</b> boot", output=output)
    res["verdict"] = "fail"
    return res


def load(res: dict[str, Any]) -> Night:
    return Night.from_json(res)


def test_a_first_run_has_nothing_to_compare() -> None:
    changes = report.compare(None, load(results()))
    assert changes.previous is None and not changes.none
    assert changes.lines() == ["first run: nothing to compare with"]


def test_the_same_results_twice_is_no_change() -> None:
    changes = report.compare(load(results()), load(results(started="2026-11-28T01:00:00Z")))
    assert changes.none
    assert changes.lines() == ["no change since the run of 2026-11-27T01:00:00Z"]


def test_newly_failing_and_newly_passing() -> None:
    good, bad = results(), fail(results(), 1)
    forward = report.compare(load(good), load(bad))
    assert forward.newly_failing == ["boot/passwordless-luks1"] and not forward.none
    back = report.compare(load(bad), load(good))
    assert back.newly_passing == ["boot/passwordless-luks1"] and not back.newly_failing
    # failing two nights running is a failure, but not a new one
    assert report.compare(load(bad), load(bad)).none


def test_digest_and_upstream_moves_are_changes() -> None:
    moved = results()
    moved["firmware"] = {**moved["firmware"], "sev_launch_digest": "ff" * 32}
    moved["components"]["grub"] = {**moved["components"]["grub"], "version": "2.16"}
    changes = report.compare(load(results()), load(moved))
    assert changes.digest == ("dd" * 32, "ff" * 32)
    assert changes.upstream == {"grub": ("2.14", "2.16")}
    assert any(line.startswith("upstream moved: grub 2.14 -> 2.16") for line in changes.lines())


def test_cases_that_appear_or_go_are_reported() -> None:
    fewer = results()
    fewer["cases"] = fewer["cases"][:1]
    assert report.compare(load(results()), load(fewer)).gone_cases == ["boot/passwordless-luks1"]
    assert report.compare(load(fewer), load(results())).new_cases == ["boot/passwordless-luks1"]


def test_junit_has_a_testcase_per_case_and_failures_carry_the_tail() -> None:
    root = ET.fromstring(report.junit(load(fail(results(), 1))))
    assert root.tag == "testsuites" and root.get("tests") == "2" and root.get("failures") == "1"
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["grub: series applies", "passwordless-luks1"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.text == "kernel panic <&>"
    assert failure.get("message") == "guest did <b>not</b> boot"
    out = cases[1].find("system-out")
    assert out is not None and out.text == "transcript: transcripts/passwordless-luks1.log"


def test_the_page_escapes_what_it_shows() -> None:
    page = report.page(Published(load(fail(results(verdict="fail"), 1)), Changes(None)))
    assert "guest did &lt;b&gt;not&lt;/b&gt; boot" in page
    assert "kernel panic &lt;&amp;&gt;" in page
    assert 'href="transcripts/passwordless-luks1.log"' in page
    assert '<p id="summary" class="fail">FAIL: 1 passed, 1 failed, 0 skipped</p>' in page


def test_an_incomplete_run_says_why() -> None:
    res = results(verdict="infrastructure", infrastructure_error="Docker is not running.")
    assert report.summary(load(res)).endswith("the run could not complete: Docker is not running.")


def test_a_changed_series_is_a_change() -> None:
    changed = results()
    comp = changed["components"]["grub"]
    changed["components"]["grub"] = {
        **comp,
        "patches": [
            {"file": "0001-x.patch", "sha256": "cc" * 32},
            {"file": "0002-y.patch", "sha256": "dd" * 32},
        ],
    }
    changes = report.compare(load(results()), load(changed))
    assert changes.series == {"grub": "added 0002-y.patch; changed 0001-x.patch"}
    assert "series changed: grub: added 0002-y.patch; changed 0001-x.patch" in changes.lines()
    assert report.compare(load(changed), load(results())).series == {
        "grub": "changed 0001-x.patch; removed 0002-y.patch"
    }
