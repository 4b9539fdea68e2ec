"""Reading GRUB's unit-test verdicts out of a build log."""

from __future__ import annotations

from harness.components import grub
from harness.components.grub import UnitTest, UnitVerdict

#: What GRUB's test runner (grub-core/tests/lib/test.c) and our build script print.
LOG = """\
== make
make[1]: Nothing to be done for 'all-am'.
== unit tests
gcc -o efisecret_test tests/efisecret_test-efisecret_unit_test.o ...
efisecret_test:
 tests/efisecret_unit_test.c:check_refused:147: assert failed: err != GRUB_ERR_NONE two passphrase entries: accepted
 tests/efisecret_unit_test.c:check_refused:148: assert failed: key == NULL && key_size == 0 two passphrase entries: key handed out
efisecret_test: FAIL
unit test efisecret_test: FAIL
example_unit_test:
example_unit_test: PASS
unit test example_unit_test: PASS
unit test other_test: ABSENT
"""  # noqa: E501


def test_each_verdict_with_the_failed_assertions_of_that_test_only() -> None:
    assert grub.unit_tests(LOG) == (
        UnitTest(
            "efisecret_test",
            UnitVerdict.FAIL,
            (
                "tests/efisecret_unit_test.c:check_refused:147: assert failed: "
                "err != GRUB_ERR_NONE two passphrase entries: accepted",
                "tests/efisecret_unit_test.c:check_refused:148: assert failed: "
                "key == NULL && key_size == 0 two passphrase entries: key handed out",
            ),
        ),
        UnitTest("example_unit_test", UnitVerdict.PASS),
        UnitTest("other_test", UnitVerdict.ABSENT),
    )


def test_a_build_that_stopped_before_the_tests_reports_none() -> None:
    assert grub.unit_tests("== make\nerror: something broke\n") == ()


def test_the_build_script_runs_every_listed_test() -> None:
    assert f"for t in {' '.join(grub.UNIT_TESTS)}; do" in grub.SCRIPT
