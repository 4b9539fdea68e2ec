"""Where a long task spends its time: named stages, timed and logged as they end.

A stage is a ``with stage("edk2 unpack"):`` block. It always logs its wall time at
debug level; when a caller (a benchmark) is :func:`recording`, the seconds also add up in that
caller's :class:`StageTimes`, so the pipeline reports without being handed a recorder
through every call. A worker thread records into the same :class:`StageTimes` when it
runs in a copy of the caller's context (:func:`contextvars.copy_context`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class StageTimes:
    """Wall seconds per stage name, in the order the stages first ended; a stage run
    twice (a component built twice) adds up. Stages that ran in a worker thread, beside
    the recording thread's own, are *alongside*: their time overlaps the others'."""

    seconds: dict[str, float] = field(default_factory=dict)
    alongside: set[str] = field(default_factory=set)
    thread: int = field(default_factory=threading.get_ident)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            if threading.get_ident() != self.thread:
                self.alongside.add(name)

    @property
    def in_line(self) -> float:
        """The seconds of the stages the recording thread ran one after the other: at
        most the wall time of the recorded block."""
        return sum(s for n, s in self.seconds.items() if n not in self.alongside)


_RECORDER: contextvars.ContextVar[StageTimes | None] = contextvars.ContextVar(
    "harness_stage_times", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[StageTimes]:
    """Collect the stages run inside this block (this thread, and workers started in a
    copy of its context)."""
    times = StageTimes()
    token = _RECORDER.set(times)
    try:
        yield times
    finally:
        _RECORDER.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage *name*: logged at debug level, recorded when someone records.
    A block that raises is recorded too (its time was spent all the same)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - start
        log.debug("%s: %.1f s", name, took)
        if (times := _RECORDER.get()) is not None:
            times.add(name, took)
