"""The subprocess wrapper: errors carry what a user needs; watch never leaks a process."""

from __future__ import annotations

import os
import re
import sys

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
