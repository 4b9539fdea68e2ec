"""The serial console of a booting guest, driven with pexpect.

Every wait also watches the failure patterns (kernel panic, edk2 ASSERT, Security
Violation, GRUB ``error:`` lines the scenario did not expect) and reports which one
matched, with the transcript's tail. ANSI escapes are stripped from the transcript,
secrets given to :class:`Console` are redacted before anything is written, and the whole
transcript goes to one file per boot.

The child is read as Latin-1, one character per byte, so the text pexpect matches is the
guest's bytes exactly: secrets are redacted as bytes (a passphrase need not be UTF-8),
and only the transcript written to disk is decoded as UTF-8.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from harness.errors import GuestVerdict

ANSI = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
REDACTED = "[REDACTED]"
#: GRUB wraps an error at 80 columns, and prefixes file:line:function in its builds: a
#: message and the lines after it are searched together.
ERROR_CONTEXT_LINES = 5
#: How long the final rescan waits for output still on its way (a guest powering off),
#: at most: a guest QEMU keeps ends the wait once it has stopped.
DRAIN_TIMEOUT = 1.0
#: How often a wait asks whether a guest that QEMU keeps (-no-shutdown) has stopped (a
#: QMP read that does not block, so cheap).
STOP_POLL = 0.02
#: Once it has stopped, a read this long that brings nothing new ends the wait: QEMU wrote
#: the guest's last words to the pty before it reported the stop. The margin is for a
#: loaded host's scheduling: in 24 boots (wiping, refusing and passwordless, with and
#: without three CPU hogs on two cores) nothing was read later than the read that
#: followed the stop's report.
STOPPED_READ = 0.05
#: How often closing looks whether the program has exited.
EXIT_POLL = 0.02
#: How the child's output is read: one character per byte, nothing lost or replaced.
WIRE = "latin-1"


#: What pexpect's expect takes in its list.
_Pattern = (
    re.Pattern[str] | re.Pattern[bytes] | str | bytes | type[pexpect.EOF] | type[pexpect.TIMEOUT]
)


@dataclass(frozen=True)
class FailurePattern:
    name: str
    pattern: str


FAILURES: tuple[FailurePattern, ...] = (
    FailurePattern("kernel panic", r"Kernel panic - not syncing"),
    FailurePattern("edk2 ASSERT", r"ASSERT [^\n]*\.c\(\d+\)"),
    FailurePattern("Security Violation", r"Security Violation"),
    FailurePattern("GRUB rescue shell", r"Entering rescue mode|grub rescue>"),
    FailurePattern("out of memory", r"Out of memory: Kill|Out of Resources"),
    # Our kernel's initramfs could not unlock or mount the root (images/minimal).
    # The whole line: a match on the part read so far would cut the reason short.
    FailurePattern("the initramfs failing", r"HARNESS-INITRAMFS-FAILED [^\r\n]*[\r\n]"),
    FailurePattern(
        "QEMU failure",
        r"qemu-system-x86_64: (?!terminating on signal)"
        r"[^\n]*(?:[Aa]ssert|[Aa]bort|[Ee]rror|[Ff]atal)",
    ),
)


class ReadTimes:
    """pexpect's ``logfile_read``: when the guest's output was read, chunk by chunk.

    Only each chunk's length is kept, with the time it was read: the text stays where
    the console keeps it (redacted when written). The reads happen while a wait runs,
    which during a boot is nearly all the time, so a landmark's time is within a read of
    when the guest printed it.
    """

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._ends: list[int] = []
        self._times: list[float] = []

    def write(self, data: str) -> None:
        self._ends.append((self._ends[-1] if self._ends else 0) + len(data))
        self._times.append(time.monotonic())

    def flush(self) -> None:
        pass

    def at(self, offset: int) -> float | None:
        """Seconds after the start at which the output's character *offset* was read
        (None: not read)."""
        i = bisect.bisect_right(self._ends, offset)
        return self._times[i] - self.start if i < len(self._times) else None


@dataclass
class Console:
    """Wraps a pexpect child that speaks on the guest's serial port."""

    child: pexpect.spawn[str]
    transcript: Path
    secrets: Sequence[bytes] = ()
    allowed_errors: Sequence[str] = ()
    #: Names of :data:`FAILURES` this guest shows by design (the scenario damaged what
    #: they report on); every other failure pattern still fails the wait.
    expected_failures: Sequence[str] = ()
    #: Whether the guest has stopped though its program stays (QEMU with -no-shutdown
    #: keeps the guest's memory after it powers off; QMP says SHUTDOWN): a wait then
    #: ends as at EOF. None: only EOF ends a wait.
    stopped: Callable[[], bool] | None = None
    #: When each part of the output was read (see :meth:`landmarks`).
    read_times: ReadTimes | None = None
    _raw: list[str] = field(default_factory=list)
    # How much of pexpect's unconsumed buffer a wait that timed out already recorded: a
    # timeout leaves the buffer in place, and the next wait's ``before`` starts with it.
    _pending: int = 0

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret.decode(WIRE), REDACTED)
        return text

    def _record(self) -> None:
        # Before and after the ANSI strip: a secret may hold a CR, which the strip drops.
        text = self._redact(ANSI.sub("", self._redact("".join(self._raw))))
        self.transcript.parent.mkdir(parents=True, exist_ok=True)
        self.transcript.write_bytes(text.encode(WIRE).decode("utf-8", "replace").encode())

    def text(self) -> str:
        """The transcript so far, ANSI stripped, secrets redacted."""
        self._record()
        return self.transcript.read_text(encoding="utf-8")

    def landmarks(self, marks: Sequence[tuple[str, str]]) -> dict[str, float]:
        """Each of *marks* (name, pattern), searched in order in the output read so far,
        with the seconds after the start at which its match was read; a mark not found
        after the previous one is left out."""
        if self.read_times is None:
            return {}
        raw, pos, found = "".join(self._raw), 0, {}
        for name, pattern in marks:
            m = re.compile(pattern).search(raw, pos)
            if m is None:
                continue
            seconds = self.read_times.at(max(m.end() - 1, 0))
            if seconds is not None:
                found[name] = seconds
                pos = m.end()
        return found

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().rstrip().splitlines()[-lines:])

    @property
    def failures(self) -> tuple[FailurePattern, ...]:
        """The failure patterns this console watches for."""
        return tuple(f for f in FAILURES if f.name not in self.expected_failures)

    def expect(self, wanted: str, timeout: float, forbid: Sequence[str] = ()) -> re.Match[str]:
        """Wait for *wanted*; fail on a failure pattern, a forbidden pattern, EOF or timeout.

        Raises:
            GuestVerdict: naming what happened instead.
        """
        return self.expect_any({"wanted": wanted}, timeout, forbid)[1]

    def expect_any(
        self, wanted: Mapping[str, str], timeout: float, forbid: Sequence[str] = ()
    ) -> tuple[str, re.Match[str]]:
        """Wait for any of *wanted* (name -> pattern); return the name and the match.

        Fails on a failure pattern, a forbidden pattern, EOF or timeout. GRUB ``error:``
        lines are checked after each wait against ``allowed_errors`` (GRUB wraps long
        lines, so an error and the lines after it are searched together).

        Raises:
            GuestVerdict: naming what happened instead.
        """
        watch = [(f.name, f.pattern) for f in self.failures]
        watch += [(f"forbidden: {p}", p) for p in forbid]
        names = list(wanted)
        patterns: list[_Pattern] = [
            *wanted.values(),
            *(p for _, p in watch),
            pexpect.EOF,
            pexpect.TIMEOUT,
        ]
        index, unconsumed = self._expect(patterns, timeout)
        self._take(self.child.after, timed_out=unconsumed)
        what = " or ".join(repr(p) for p in wanted.values())
        if index < len(names):
            match = self.child.match
            assert isinstance(match, re.Match)
            return names[index], match
        if index < len(names) + len(watch):
            name = watch[index - len(names)][0]
            raise GuestVerdict(
                f"The guest showed {name} while waiting for {what}.", name, self.tail()
            )
        if index == len(patterns) - 2:
            raise GuestVerdict(f"The guest exited while waiting for {what}.", "exited", self.tail())
        raise GuestVerdict(f"Nothing matching {what} within {timeout:g} s.", "timeout", self.tail())

    def _expect(self, patterns: list[_Pattern], timeout: float) -> tuple[int, bool]:
        """pexpect's expect, where a guest that :attr:`stopped` counts as EOF; the index
        and whether pexpect's buffer was left unconsumed (a timeout, or such a stop)."""
        eof, timed_out = patterns.index(pexpect.EOF), patterns.index(pexpect.TIMEOUT)
        if self.stopped is None:
            index = self.child.expect(patterns, timeout=timeout)
            return index, index == timed_out
        deadline = time.monotonic() + timeout
        while True:
            # Asked before the read: once QEMU reported the stop, the guest's last words
            # are in the pty; the stop counts once a read of STOPPED_READ brought nothing.
            stopped = self.stopped()
            had = len(self.child.buffer)
            left = deadline - time.monotonic()
            window = STOPPED_READ if stopped else STOP_POLL
            index = self.child.expect(patterns, timeout=max(0.0, min(left, window)))
            if index != timed_out:
                return index, False
            if stopped and len(self.child.buffer) == had:
                return eof, True
            if not stopped and left <= STOP_POLL:
                return timed_out, True

    def _take(self, after: object, timed_out: bool = False) -> None:
        """Record what the last wait read (once, though a timeout leaves it unconsumed),
        and judge the GRUB errors in it."""
        before = self.child.before or ""
        new = before[self._pending :] + (after if isinstance(after, str) else "")
        self._pending = len(before) if timed_out else 0
        self._raw.append(new)
        self._record()
        self._check_grub_errors(ANSI.sub("", new))

    def check_transcript(self) -> None:
        """Judge the whole transcript again, once the guest is gone.

        A failure pattern or GRUB error split across two waits, or printed mid-line,
        escapes the per-wait checks; this rescan catches it.

        Raises:
            GuestVerdict: the first failure pattern or unexpected GRUB error found.
        """
        if self.child.isalive():  # what the guest printed after the last wait
            # Until QEMU exits, or the guest it keeps has stopped and its last words
            # are read: a drain of a stopped guest costs no second of waiting.
            _, unconsumed = self._expect([pexpect.EOF, pexpect.TIMEOUT], DRAIN_TIMEOUT)
            before = self.child.before or ""
            self._raw.append(before[self._pending :])
            self._pending = len(before) if unconsumed else 0
            self._record()
        text = ANSI.sub("", "".join(self._raw))
        for failure in self.failures:
            if re.search(failure.pattern, text):
                raise GuestVerdict(
                    f"The transcript shows {failure.name}.", failure.name, self.tail()
                )
        self._check_grub_errors(re.sub(r"(?<!\n)error: ", "\nerror: ", text))

    def _check_grub_errors(self, text: str) -> None:
        lines = text.splitlines()
        for n, line in enumerate(lines):
            if not line.startswith("error:"):
                continue
            # GRUB wraps at the terminal's width, mid-word as often as not: an allowed
            # error matches the lines joined either way ("no key" / "protector" and
            # "passphra" / "se prompting").
            after = lines[n : n + ERROR_CONTEXT_LINES]
            # ... but not into the next error: an allowed one after it must not let an
            # unexpected one pass.
            ends = [i for i, ln in enumerate(after) if i and ln.startswith("error:")]
            after = after[: ends[0]] if ends else after
            contexts = (" ".join(after), "".join(after))
            if not any(re.search(a, c) for a in self.allowed_errors for c in contexts):
                raise GuestVerdict(
                    f"GRUB reported an error the scenario does not expect: {line}",
                    "GRUB error",
                    self.tail(),
                )

    def send(self, keys: str) -> None:
        """Press *keys* (no Enter): what a host at the serial console can do any time."""
        self.child.send(keys)

    def sendline(self, text: str) -> None:
        """Type *text* and Enter (what is typed is not echoed by GRUB's password prompt)."""
        self.child.sendline(text)

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the guest (QEMU) to exit, or to stop (:attr:`stopped`); True if it
        did within *timeout*.

        The failure patterns are watched on the way, as on every other wait.

        Raises:
            GuestVerdict: a failure pattern appeared before the exit.
        """
        failures = self.failures
        patterns: list[_Pattern] = [
            pexpect.EOF,
            pexpect.TIMEOUT,
            *(f.pattern for f in failures),
        ]
        index, unconsumed = self._expect(patterns, timeout)
        self._take(self.child.after, timed_out=unconsumed)
        if index >= 2:
            name = failures[index - 2].name
            raise GuestVerdict(f"The guest showed {name} on its way out.", name, self.tail())
        return index == 0

    @property
    def alive(self) -> bool:
        """The program behind the console (QEMU) still runs."""
        return bool(self.child.isalive())

    def close(self, grace: float = 0.0) -> None:
        """Give the program *grace* seconds to exit on its own, then kill it; the
        transcript on disk is complete afterwards."""
        deadline = time.monotonic() + grace
        while self.child.isalive() and time.monotonic() < deadline:
            time.sleep(EXIT_POLL)
        if not self.child.isalive():
            # The pause for a program still exiting: pexpect and ptyprocess each have one.
            self.child.delayafterclose = 0.0
            # pexpect's stubs do not declare its ptyprocess.PtyProcess
            ptyproc = self.child.ptyproc  # type: ignore[attr-defined]
            ptyproc.delayafterclose = 0.0
        self.child.close(force=True)
        self.text()


def spawn(
    argv: Sequence[str],
    transcript: Path,
    secrets: Sequence[bytes] = (),
    allowed_errors: Sequence[str] = (),
    expected_failures: Sequence[str] = (),
) -> Console:
    """Start *argv* with its stdio on a pty and wrap it; the caller must close it."""
    times = ReadTimes()
    child = pexpect.spawn(argv[0], list(argv[1:]), encoding=WIRE, timeout=None, echo=False)
    child.logfile_read = times
    return Console(
        child,
        transcript,
        tuple(secrets),
        tuple(allowed_errors),
        tuple(expected_failures),
        read_times=times,
    )


def interact(argv: Sequence[str]) -> None:
    """Hand the terminal to the guest's serial console (Ctrl-] leaves)."""
    child = pexpect.spawn(argv[0], list(argv[1:]), encoding="utf-8", codec_errors="replace")
    try:
        child.interact()
    finally:
        child.close(force=True)
