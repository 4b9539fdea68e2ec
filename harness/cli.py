"""What the Invoke tasks share: error presentation and logging.

Tasks wrap their bodies with :func:`entry`, so a :class:`HarnessError` reaches the user
as one sentence (plus hint) and the error's exit status, never as a traceback; with
Invoke's ``--debug`` (or ``HARNESS_DEBUG=1``) the traceback is shown too.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from invoke.exceptions import Exit

from harness.errors import HarnessError

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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def entry(body: Callable[P, R]) -> Callable[P, R]:
    """Decorate a task body: set up logging, turn harness errors into clean exits."""

    @functools.wraps(body)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        setup_logging()
        # A cancelled CI job sends SIGTERM: clean up (containers, QEMU) as on Ctrl-C.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return body(*args, **kwargs)
        except HarnessError as err:
            if debugging():
                raise
            raise Exit(f"error: {err}", code=err.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper
