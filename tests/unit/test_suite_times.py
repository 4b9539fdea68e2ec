"""tools/suite_times.py: the tests' time by kind, from a JUnit file like pytest's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import suite_times

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="tests.unit.test_cache" name="test_a" time="0.5"/>
<testcase classname="tests.unit.test_ram.TestCopies" name="test_b" time="1.5"/>
<testcase classname="tests.integration.test_boot" name="test_scenario[x]" time="10.25"/>
<testcase classname="tests.integration.test_first_run" name="test_f" time="300"/>
<testcase classname="tests.integration.test_sev_cli" name="test_s" time="4"/>
</testsuite></testsuites>
"""


def test_groups_add_up_by_kind(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    seconds, count = suite_times.phases(junit)
    assert dict(count) == {"unit": 2, "boots": 1, "builds": 1, "other": 1}
    assert seconds["unit"] == 2.0 and seconds["builds"] == 300 and seconds["other"] == 4
    text = suite_times.render(seconds, count)
    assert text.splitlines()[1:] == [
        "unit                2 s      2 tests",
        "builds            300 s      1 tests",
        "boots              10 s      1 tests",
        "other               4 s      1 tests",
        "all               316 s      5 tests",
    ]


def test_every_group_names_modules_that_exist() -> None:
    integration = Path(__file__).resolve().parents[1] / "integration"
    for modules in suite_times.GROUPS.values():
        for module in modules:
            assert (integration / f"{module}.py").is_file(), module


@pytest.mark.parametrize("content", ["not xml", "<testsuites/>"])
def test_a_file_that_is_no_junit_is_one_sentence(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(content)
    assert suite_times.main([str(junit)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
