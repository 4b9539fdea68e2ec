"""The one place the harness starts subprocesses.

Argument lists only, never a shell. Every command is logged at debug level as a
copy-pasteable ``+ cmd`` line; a failure raises :class:`CommandError` with the command,
its exit status and the tail of its output.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import CommandError

log = logging.getLogger(__name__)

#: Lines of output kept in a CommandError: enough to show a compiler error or an apt
#: failure without burying the message.
TAIL_LINES = 40


def _fmt(argv: Sequence[str]) -> str:
    return "+ " + shlex.join(argv)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """Return the last *lines* lines of *text*."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    capture: bool = True,
    output: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion.

    Args:
        argv: program and arguments.
        check: raise CommandError on a non-zero exit (the default).
        timeout: seconds before the command is killed; None waits forever.
        cwd: working directory.
        env: extra environment variables, added to ours.
        input: bytes for the command's standard input (otherwise /dev/null).
        capture: capture stdout and stderr (stderr merged into stdout).
        output: write stdout and stderr to this file instead (a VM's console log).

    Raises:
        CommandError: the command is missing, timed out, or failed with check=True.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("%s", _fmt(args))
    full_env = None if env is None else {**os.environ, **env}
    sink = open(output, "wb") if output is not None else None  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=sink or (subprocess.PIPE if capture else None),
            stderr=subprocess.STDOUT if sink or capture else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        raise CommandError(
            f"{args[0]} is not installed or not on PATH.", argv=args, returncode=None
        ) from err
    except subprocess.TimeoutExpired as err:
        out = err.output.decode(errors="replace") if err.output else ""
        raise CommandError(
            f"{args[0]} did not finish within {timeout:g} s.",
            argv=args,
            returncode=None,
            output_tail=tail(out),
            timed_out=True,
        ) from err
    finally:
        if sink is not None:
            sink.close()
    if check and proc.returncode != 0:
        out = proc.stdout.decode(errors="replace") if proc.stdout else ""
        raise CommandError(
            f"{shlex.join(args)} failed with exit status {proc.returncode}.",
            argv=args,
            returncode=proc.returncode,
            output_tail=tail(out),
        )
    return proc


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived background process (a daemon) with output to *log_path*.

    The process is put in its own session so it outlives the harness; callers own it.

    Raises:
        CommandError: the program does not exist.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("%s &> %s", _fmt(args), log_path)
    full_env = None if env is None else {**os.environ, **env}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        try:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        except FileNotFoundError as err:
            raise CommandError(
                f"{args[0]} is not installed or not on PATH.", argv=args, returncode=None
            ) from err


def which(program: str) -> Path | None:
    """Locate *program* on PATH (plus the sbin directories a non-root PATH may lack)."""
    extra = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(program, path=os.environ.get("PATH", "") + os.pathsep + extra)
    return Path(found) if found else None


@dataclass(frozen=True)
class Watched:
    """What :func:`watch` saw: which pattern matched (None on timeout) and the output."""

    matched: str | None
    match: re.Match[str] | None
    output: str
    exited: int | None


def watch(
    argv: Sequence[str | os.PathLike[str]],
    patterns: Mapping[str, re.Pattern[str]],
    *,
    timeout: float,
    grace: float = 5.0,
) -> Watched:
    """Run a command that does not end by itself until its output matches a pattern.

    The command's stdout and stderr are read together; as soon as one of *patterns*
    matches the output so far, or the command exits, or *timeout* seconds pass, the
    command is terminated (SIGTERM, then SIGKILL after *grace* seconds). It never
    outlives this call, Ctrl-C included.

    Returns:
        Watched with the name of the first pattern that matched, or None.

    Raises:
        CommandError: the program does not exist.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("%s", _fmt(args))
    try:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except FileNotFoundError as err:
        raise CommandError(
            f"{args[0]} is not installed or not on PATH.", argv=args, returncode=None
        ) from err
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    output = ""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                sel.select(min(left, 0.5))
                chunk = proc.stdout.read()
                if chunk:
                    output += chunk.decode(errors="replace")
                    for name, pattern in patterns.items():
                        if m := pattern.search(output):
                            return Watched(name, m, output, None)
                elif proc.poll() is not None:
                    return Watched(None, None, output, proc.returncode)
            return Watched(None, None, output, None)
    finally:
        _stop(proc, grace)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
