"""Reading the user's files and writing private ones, with errors a user can act on.

Private outputs (keys, secret packets) are written 0600 from the first byte and land
all together or not at all: each goes to a temporary file beside its target, and only
when every one is complete are they renamed into place. Should a rename fail half-way,
the targets already replaced get their previous contents back.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from harness.errors import InputError


def read_input(path: str | Path, what: str) -> bytes:
    """Read a user-supplied file.

    Raises:
        InputError: missing, a directory, or unreadable.
    """
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError as err:
        raise InputError(f"The {what} file {p} does not exist.") from err
    except IsADirectoryError as err:
        raise InputError(f"The {what} path {p} is a directory, not a file.") from err
    except OSError as err:
        raise InputError(f"The {what} file {p} cannot be read: {err.strerror}.") from err


def _stage(target: Path, data: bytes) -> str:
    if target.is_dir():
        raise InputError(f"Cannot write {target}: it is a directory.")
    directory = target.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.")
    except OSError as err:
        raise InputError(f"Cannot write {target}: {err.strerror} ({directory}).") from err
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp creates the file 0600
            out.write(data)
    except OSError as err:
        os.unlink(tmp)
        raise InputError(f"Cannot write {target}: {err.strerror}.") from err
    return tmp


def write_private(files: Mapping[Path, bytes]) -> None:
    """Write every file 0600, all or nothing.

    Raises:
        InputError: a target is a directory, or its directory is missing or read-only.
    """
    staged: list[tuple[str, Path]] = []
    # (target, backup of its old contents or None when it did not exist)
    placed: list[tuple[Path, str | None]] = []
    try:
        for target, data in files.items():
            staged.append((_stage(target, data), target))
        for tmp, target in staged:
            backup = None
            if target.exists():
                backup = f"{tmp}.old"
                os.link(target, backup)
            try:
                os.replace(tmp, target)
            except OSError as err:
                if backup:
                    os.unlink(backup)
                raise InputError(f"Cannot write {target}: {err.strerror}.") from err
            placed.append((target, backup))
        staged.clear()
        for _, backup in placed:
            if backup:
                os.unlink(backup)
        placed.clear()
    finally:
        for target, backup in reversed(placed):  # a later rename failed: undo
            with contextlib.suppress(OSError):
                if backup:
                    os.replace(backup, target)
                else:
                    os.unlink(target)
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_private(path: Path, what: str) -> bytes:
    """Read a secret file that only its owner may read.

    Raises:
        InputError: missing or unreadable, or group or others may read it.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0  # read_input says what is wrong with it
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        raise InputError(
            f"The {what} file {path} is readable by group or others.",
            hint=f"chmod 600 {path}",
        )
    return read_input(path, what)
