"""Task plumbing: private files are all or nothing; errors become clean exits."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from harness.cli import entry
from harness.errors import FirmwareFormatError, InputError, VerificationError
from harness.files import write_private


def test_private_files_are_0600(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_private({a: b"one", b: b"two"})
    assert a.read_bytes() == b"one" and b.read_bytes() == b"two"
    for p in (a, b):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_all_or_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good"
    with pytest.raises(InputError, match="Cannot write"):
        write_private({good: b"x", tmp_path / "missing-dir" / "bad": b"y"})
    assert not good.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_existing_file_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_private({target: b"new"})
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "error, code", [(FirmwareFormatError("bad."), 2), (VerificationError("no."), 1)]
)
def test_entry_turns_errors_into_exits(error: Exception, code: int) -> None:
    @entry
    def body() -> None:
        raise error

    with pytest.raises(Exit) as info:
        body()
    assert info.value.code == code
    assert str(info.value.message).startswith("error: ")
