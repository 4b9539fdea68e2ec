"""A scripted guest for the verdict tests: a stand-in for pexpect's child, not for QEMU.

The real :class:`harness.host.console.Console` and the real :mod:`harness.boots.verdicts` run
against it, so what is tested is our judging, with canned console output in place of a
booting guest. A script is the output the guest prints at start and a function that
answers each thing typed with more output (or ends the guest).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pexpect

from harness.boots import scenarios, verdicts
from harness.guest.proof import Proof
from harness.host.console import Console
from harness.passphrase import Passphrase

#: The launch's nonce and the image's key that scripted guests answer with.
OWNER_PROOF = Proof("5a" * 32, bytes(range(32)))


def proof_line(
    proof: Proof = OWNER_PROOF, source: str | None = None, mac: str | None = None
) -> str:
    """The root's answer to *proof*'s nonce, as images/minimal/proof prints it (labelled
    *source*, by default the way the launch gave the nonce)."""
    return f"HARNESS-PROOF from={source or proof.source} mac={mac or proof.expected()}\n"


PROOF_LINE = proof_line()

#: Answers one input (what was sent, Enter included) with the guest's next output;
#: None ends the guest (QEMU exits).
Reaction = Callable[[str], str | None]


class FakeChild:
    """Enough of ``pexpect.spawn`` for :class:`Console`: expect, send, sendline."""

    def __init__(self, opening: str, react: Reaction | None = None, exits: bool = False) -> None:
        self.pending = opening
        self.react = react or (lambda _typed: "")
        self.alive = True
        self.exits = exits  # the guest exits once its output is read
        self.typed: list[str] = []
        self.before: str | None = None
        self.after: Any = None
        self.match: Any = None

    def isalive(self) -> bool:
        return self.alive

    def send(self, text: str) -> None:
        self.typed.append(text)
        more = self.react(text)
        if more is None:
            self.exits = True
        else:
            self.pending += more

    def sendline(self, text: str) -> None:
        self.send(text + "\n")

    def expect(self, patterns: list[Any], timeout: float | None = None) -> int:
        best: tuple[int, int, re.Match[str]] | None = None
        for index, pattern in enumerate(patterns):
            if pattern in (pexpect.EOF, pexpect.TIMEOUT):
                continue
            m = re.search(pattern, self.pending)
            if m and (best is None or m.start() < best[1]):
                best = (index, m.start(), m)
        if best is not None:
            index, _, m = best
            self.before, self.after, self.match = self.pending[: m.start()], m.group(0), m
            self.pending = self.pending[m.end() :]
            return index
        self.before, self.pending = self.pending, ""
        if self.exits and pexpect.EOF in patterns:
            self.alive = False
            self.after = pexpect.EOF
            return patterns.index(pexpect.EOF)
        self.after = pexpect.TIMEOUT
        return patterns.index(pexpect.TIMEOUT)

    def close(self, force: bool = False) -> None:
        self.alive = False


def console(
    tmp_path: Path,
    opening: str,
    react: Reaction | None = None,
    *,
    exits: bool = False,
    allowed_errors: tuple[str, ...] = (),
    secrets: tuple[bytes, ...] = (),
    expected_failures: tuple[str, ...] = (),
) -> tuple[Console, FakeChild]:
    """A real Console over a scripted guest; the transcript goes to *tmp_path*."""
    child = FakeChild(opening, react, exits)
    con = Console(
        cast(Any, child), tmp_path / "console.log", secrets, allowed_errors, expected_failures
    )
    return con, child


#: The passphrases scripted scenarios are played with: the owner's, a wrong one, the host's.
OWNER_PASSPHRASE = Passphrase(b"owner-passphrase")
WRONG_PASSPHRASE = Passphrase(b"wrong-passphrase")
HOST_PASSPHRASE = Passphrase(b"host-passphrase")


def play_scenario(
    tmp_path: Path,
    name: str,
    opening: str,
    react: Reaction | None = None,
    *,
    token: str,
    exits: bool = True,
    play: verdicts.Play | None = None,
    host_typed: Passphrase | None = HOST_PASSPHRASE,
) -> tuple[str | None, FakeChild]:
    """Play scenario *name* (or *play*) against a scripted guest with the real Console
    and verdict code; returns what the proof showed and the guest (what was typed)."""
    scenario = scenarios.SCENARIOS[name]
    con, child = console(
        tmp_path,
        opening,
        react,
        exits=exits,
        allowed_errors=scenario.allowed_errors,
        expected_failures=scenario.expected_failures,
    )
    proved = verdicts.play(
        play or scenario.play,
        con,
        token=token,
        passphrase=OWNER_PASSPHRASE,
        wrong=WRONG_PASSPHRASE,
        host_typed=host_typed,
        timeout=5,
        exit_timeout=5,
        proof=OWNER_PROOF,
    )
    return proved, child
