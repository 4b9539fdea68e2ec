"""Patch series: quilt-style ``series`` files of ``git format-patch`` patches.

Applying = the unpacked source committed as the base of a scratch git repository, then
``git am`` of each patch in order. A patch that does not apply stops everything with its
file name and git's reason; the tree is left at the base, nothing is built.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from harness import run
from harness.errors import CommandError, ConfigError, InputError

log = logging.getLogger(__name__)

SIGNED_OFF = re.compile(r"^Signed-off-by: .+ <[^>]+@[^>]+>$", re.MULTILINE)
#: The identity our scratch repositories commit the base with.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "harness",
    "GIT_AUTHOR_EMAIL": "harness@localhost",
    "GIT_COMMITTER_NAME": "harness",
    "GIT_COMMITTER_EMAIL": "harness@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}


@dataclass(frozen=True)
class Patch:
    path: Path
    sha256: str
    subject: str
    author: str
    signed_off: bool

    @classmethod
    def read(cls, path: Path) -> Patch:
        data = path.read_bytes()
        msg = email.message_from_bytes(data, policy=email.policy.default)
        subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", str(msg.get("Subject", "")).replace("\n", " "))
        return cls(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            subject=subject.strip(),
            author=str(msg.get("From", "")),
            signed_off=bool(SIGNED_OFF.search(data.decode(errors="replace"))),
        )


def read_series(directory: Path) -> list[Patch]:
    """Read ``directory/series``: one patch file per line, ``#`` comments, blanks ignored.

    Raises:
        ConfigError: no series file, a listed patch is missing, or listed twice.
    """
    series = directory / "series"
    try:
        lines = series.read_text().splitlines()
    except FileNotFoundError as err:
        raise ConfigError(f"{series} does not exist.") from err
    names = [ln.split("#", 1)[0].strip() for ln in lines]
    names = [n for n in names if n]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{series} lists {sorted(dupes)[0]} twice.")
    patches = []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise ConfigError(f"{series} lists {name}, which does not exist.")
        patches.append(Patch.read(path))
    return patches


def git(tree: Path, *args: str) -> str:
    return run.run(["git", "-C", str(tree), *args], env=GIT_ENV).stdout.decode()


def commit_base(tree: Path, label: str) -> str:
    """Make *tree* a git repository whose first commit is the pristine source."""
    run.run(["git", "init", "--quiet", str(tree)], env=GIT_ENV)
    git(tree, "add", "--all", "--force")
    git(tree, "commit", "--quiet", "--no-verify", "-m", label)
    git(tree, "tag", "-f", "harness-base")
    return git(tree, "rev-parse", "HEAD").strip()


class PatchError(InputError):
    """A patch of the series does not apply."""


def apply_series(tree: Path, patches: list[Patch]) -> None:
    """Reset *tree* to its base and ``git am`` the series.

    Files the series does not change keep their timestamps, so an incremental build in
    the same tree stays incremental; re-applying the series already applied does
    nothing at all.

    Raises:
        PatchError: a patch does not apply; the message names it and gives git's reason.
    """
    stamp = tree / ".git" / "harness-series"
    want = "\n".join(p.sha256 for p in patches)
    if stamp.exists() and stamp.read_text() == want:
        return  # already applied; leave generated files (autogen, builds) alone
    stamp.unlink(missing_ok=True)
    if (tree / ".git" / "rebase-apply").exists():
        git(tree, "am", "--abort")
    git(tree, "checkout", "--quiet", "--force", "harness-base")
    git(tree, "reset", "--quiet", "--hard", "harness-base")
    for patch in patches:
        try:
            run.run(
                [
                    "git",
                    "-C",
                    str(tree),
                    "am",
                    "--quiet",
                    "--keep-cr",
                    "--committer-date-is-author-date",
                    str(patch.path),
                ],
                env=GIT_ENV,
            )
        except CommandError as err:
            run.run(["git", "-C", str(tree), "am", "--abort"], check=False, env=GIT_ENV)
            git(tree, "reset", "--quiet", "--hard", "harness-base")
            reason = "\n".join(
                ln
                for ln in err.output_tail.splitlines()
                if ln.startswith(("error:", "Patch failed"))
            )
            raise PatchError(
                f"{patch.path.name} does not apply: {reason or err.output_tail}"
            ) from err
        log.debug("applied %s", patch.path.name)
    stamp.write_text(want)
