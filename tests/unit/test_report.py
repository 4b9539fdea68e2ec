"""The nightly's report renderers and the comparison with the previous run."""

from __future__ import annotations

import copy
import dataclasses
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


def test_junit_carries_the_firmware_it_ran_on() -> None:
    root = ET.fromstring(report.junit(load(results())))
    assert root.get("errors") == "0"
    for suite in root.findall("testsuite"):
        props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
        assert props["firmware.sha256"] == "cc" * 32
        assert props["firmware.sev_launch_digest"] == "dd" * 32


def test_a_night_that_could_not_run_is_an_error_not_an_empty_green_suite() -> None:
    res = results(
        verdict="infrastructure",
        infrastructure_error="Docker is not running.",
        cases=[],
        firmware=None,
    )
    root = ET.fromstring(report.junit(load(res)))
    assert (root.get("tests"), root.get("errors"), root.get("failures")) == ("1", "1", "0")
    error = root.find("./testsuite/testcase/error")
    assert error is not None and error.get("message") == "Docker is not running."


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


# -- the history view ---------------------------------------------------------------


def night_at(hour: int, seconds: float, failed: bool = False) -> Night:
    res = results(started=f"2026-11-{20 + hour // 24:02d}T{hour % 24:02d}:00:00Z")
    res["cases"][1]["seconds"] = seconds
    res["cases"].append(
        {"suite": "boot", "name": "passwordless-debian-luks1", "outcome": "passed",
         "seconds": 60.0 + hour, "detail": "ok", "output": "",
         "links": {"transcript": "transcripts/passwordless-debian-luks1.log"}}
    )  # fmt: skip
    return load(fail(res, 1) if failed else res)


def kept(*nights: tuple[str, Night], files: tuple[str, ...] = ()) -> list[report.Kept]:
    return [report.Kept(i, n, frozenset(files)) for i, n in nights]


def test_the_history_grid_links_each_night_to_its_own_transcript() -> None:
    history = kept(
        ("b", night_at(2, 9.0, failed=True)),
        ("a", night_at(1, 5.0)),
        files=("nights/b/transcripts/passwordless-luks1.log",),
    )
    page = report.history_page(history)
    assert page.count('<tr><td class="case">') == 3  # series, two boots
    assert 'href="nights/b/transcripts/passwordless-luks1.log"' in page
    # Night a's transcript is no longer kept: its cell says how it went, without a link.
    assert "nights/a/" not in page
    assert "guest did &lt;b&gt;not&lt;/b&gt; boot" in page  # the failed cell's title
    assert page.index('title="2026-11-20T02:00:00Z"') < page.index('title="2026-11-20T01:00:00Z"')


def test_a_slow_down_shows_in_the_chart_before_it_fails() -> None:
    history = kept(("c", night_at(3, 20.0)), ("b", night_at(2, 5.0)), ("a", night_at(1, 5.0)))
    points = {
        c.case: c.points
        for c in (report.chart(n, s) for n, s in _series(history, "boot/passwordless-luks1"))
    }["boot/passwordless-luks1"]
    assert [p.seconds for p in points] == [5.0, 5.0, 20.0]  # oldest first
    assert points[0].x < points[1].x < points[2].x
    assert points[2].y < points[1].y == points[0].y  # slower is higher on the chart
    page = report.history_page(history)
    assert page.count("<svg") == 2  # the two boots; the series case takes no time
    assert "<polyline" in page and "20 s" in page


def _series(history: list[report.Kept], name: str) -> list[tuple[str, Any]]:
    series = [
        (k, c) for k in reversed(history) for c in k.night.cases if f"{c.suite}/{c.name}" == name
    ]
    return [(name, series)]


def test_the_nice_ceiling_covers_the_slowest_night() -> None:
    for seconds, top in ((0.4, 1.0), (5.0, 5.0), (61.0, 100.0), (130.0, 200.0)):
        chart = report.chart("x", [(kept(("a", night_at(1, 1)))[0], _case(seconds))])
        assert chart.ticks[-1].label == f"{top:g} s"
        assert chart.points[0].y >= chart.top


def _case(seconds: float) -> Any:
    return dataclasses.replace(load(results()).cases[1], seconds=seconds)


def test_the_report_shows_the_debian_boot_to_login_and_links_the_history() -> None:
    page = report.page(Published(night_at(1, 5.0), Changes(None)), "../history/index.html")
    assert '<a href="../history/index.html">' in page
    assert '<table id="logins">' in page and "61.0" in page
