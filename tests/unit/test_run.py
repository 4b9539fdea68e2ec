"""The subprocess wrapper: errors carry what a user needs; watch never leaks a process."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from harness import run
from harness.errors import CommandError


def test_failure_carries_command_status_and_tail() -> None:
    script = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)"
    with pytest.raises(CommandError) as info:
        run.run([sys.executable, "-c", script])
    err = info.value
    assert err.returncode == 3 and err.argv[0] == sys.executable
    assert err.output_tail.splitlines() == [f"line {i}" for i in range(60, 100)]
    assert "exit status 3" in str(err) and "line 99" in str(err)


def test_missing_program() -> None:
    with pytest.raises(CommandError, match="not installed"):
        run.run(["/nonexistent/program"])


def test_timeout() -> None:
    with pytest.raises(CommandError, match=r"did not finish within 0\.5 s"):
        run.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


def test_output_to_a_file_and_a_timeout_that_says_so(tmp_path: Path) -> None:
    """A VM's console goes to its log file (stdout and stderr together); a run that
    outlives its time is killed and says it timed out, a missing program does not."""
    log_path = tmp_path / "console.log"
    script = "import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr, flush=True)"
    done = run.run([sys.executable, "-c", script], output=log_path)
    assert done.returncode == 0 and done.stdout is None
    assert sorted(log_path.read_text().split()) == ["err", "out"]
    sleeper = "import time\nprint('started', flush=True)\ntime.sleep(30)"
    with pytest.raises(CommandError) as info:
        run.run([sys.executable, "-c", sleeper], timeout=1, output=log_path)
    assert info.value.timed_out and log_path.read_text() == "started\n"
    with pytest.raises(CommandError) as info:
        run.run(["/nonexistent/program"], output=log_path)
    assert not info.value.timed_out


def test_check_false_returns_status() -> None:
    assert run.run([sys.executable, "-c", "raise SystemExit(4)"], check=False).returncode == 4


def test_debug_line_is_copy_pasteable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="harness.run")
    run.run([sys.executable, "-c", "pass", "two words"])
    assert f"+ {sys.executable} -c pass 'two words'" in caplog.text


def test_watch_matches_and_stops_the_process(tmp_path: object) -> None:
    code = "import os,time; print(os.getpid(), 'ready', flush=True); time.sleep(60)"
    seen = run.watch(
        [sys.executable, "-c", code], {"ready": re.compile(r"(\d+) ready")}, timeout=20
    )
    assert seen.matched == "ready" and seen.match is not None
    pid = int(seen.match.group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_watch_timeout_and_exit() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    assert run.watch(sleeper, {"x": re.compile("never")}, timeout=0.5).matched is None
    quitter = [sys.executable, "-c", "print('bye'); raise SystemExit(7)"]
    seen = run.watch(quitter, {"x": re.compile("never")}, timeout=20)
    assert seen.matched is None and seen.exited == 7 and "bye" in seen.output
