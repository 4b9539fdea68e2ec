"""What the Invoke tasks share: error presentation, logging, private output files.

Tasks wrap their bodies with :func:`entry`, so a :class:`HarnessError` reaches the user
as one sentence (plus hint) and the error's exit status, never as a traceback; with
Invoke's ``--debug`` (or ``HARNESS_DEBUG=1``) the traceback is shown too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ParamSpec, TypeVar

from invoke.exceptions import Exit

from harness.errors import HarnessError, InputError

P = ParamSpec("P")
R = TypeVar("R")


def debugging() -> bool:
    """True under ``./inv --debug ...`` (Invoke turns on root DEBUG logging) or HARNESS_DEBUG."""
    return os.environ.get("HARNESS_DEBUG") == "1" or logging.getLogger().isEnabledFor(logging.DEBUG)


def setup_logging() -> None:
    level = logging.DEBUG if debugging() else logging.INFO
    logger = logging.getLogger("harness")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def entry(body: Callable[P, R]) -> Callable[P, R]:
    """Decorate a task body: set up logging, turn harness errors into clean exits."""

    @functools.wraps(body)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        setup_logging()
        try:
            return body(*args, **kwargs)
        except HarnessError as err:
            if debugging():
                raise
            raise Exit(f"error: {err}", code=err.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper


def read_input(path: str | Path, what: str) -> bytes:
    """Read a user-supplied file; missing or unreadable files are InputErrors."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError as err:
        raise InputError(f"The {what} file {p} does not exist.") from err
    except IsADirectoryError as err:
        raise InputError(f"The {what} path {p} is a directory, not a file.") from err
    except OSError as err:
        raise InputError(f"The {what} file {p} cannot be read: {err.strerror}.") from err


def write_private(files: Mapping[Path, bytes]) -> None:
    """Write every file 0600, all or nothing.

    Each file is written to a temporary file in its target directory, created 0600 from
    the start, and only once every one of them is complete are they renamed into
    place; on any failure the temporary files are removed and no target is touched.

    Raises:
        InputError: a target directory does not exist or is not writable.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for target, data in files.items():
            directory = target.parent if str(target.parent) else Path(".")
            try:
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.")
            except OSError as err:
                raise InputError(f"Cannot write {target}: {err.strerror} ({directory}).") from err
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as out:  # mkstemp creates the file 0600
                out.write(data)
        for tmp, target in staged:
            os.replace(tmp, target)
        staged.clear()
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
