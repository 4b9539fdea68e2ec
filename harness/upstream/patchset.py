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
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import run
from harness.errors import CommandError, ConfigError, InputError, PatchError

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


def series_names(text: str) -> list[str]:
    """The patch file names a ``series`` file lists, in order."""
    names = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [n for n in names if n]


def read_series(directory: Path) -> list[Patch]:
    """Read ``directory/series``: one patch file per line, ``#`` comments, blanks ignored.

    Raises:
        ConfigError: no series file, a listed patch is missing, or listed twice.
    """
    series = directory / "series"
    try:
        names = series_names(series.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{series} does not exist.") from err
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
    # No automatic gc: after the base commit git would pack every loose object in the
    # background (the Linux tree: minutes of a core, while the build wants both).
    git(tree, "config", "gc.auto", "0")
    # Objects stored without zlib: the edk2 base (39,000 files) is added in 5 s instead
    # of 8 s, for 150 MB more in .git. Object ids, so the commit, are the same.
    git(tree, "-c", "core.looseCompression=0", "add", "--all", "--force")
    git(tree, "commit", "--quiet", "--no-verify", "-m", label)
    git(tree, "tag", "-f", "harness-base")
    return git(tree, "rev-parse", "HEAD").strip()


@dataclass(frozen=True)
class Applied:
    """What happened to one patch of a series: applied (``commit``), or why not."""

    patch: Patch
    commit: str | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.commit is not None


def _git_am(tree: Path, patch: Patch) -> str | None:
    """``git am`` one patch; git's reason when it does not apply (the tree is unchanged)."""
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
        reason = "; ".join(
            ln.strip()
            for ln in err.output_tail.splitlines()
            if ln.startswith(("error:", "Patch failed"))
        )
        return reason or err.output_tail.strip()
    return None


def _reset(tree: Path) -> None:
    (tree / ".git" / "harness-series").unlink(missing_ok=True)
    if (tree / ".git" / "rebase-apply").exists():
        git(tree, "am", "--abort")
    git(tree, "checkout", "--quiet", "--force", "harness-base")
    git(tree, "reset", "--quiet", "--hard", "harness-base")


def try_series(tree: Path, patches: list[Patch], *, keep_going: bool = False) -> list[Applied]:
    """Reset *tree* to its base and ``git am`` the series patch by patch.

    git am takes no fuzz: a hunk applies where its context matches exactly (at any
    offset), or the patch does not apply. A patch that does not apply is reported and
    left out; after it, the rest are tried only with *keep_going* (they may depend on
    it), and otherwise reported as not tried. When every patch applied, the tree is
    stamped as carrying this series.
    """
    _reset(tree)
    results: list[Applied] = []
    blocked: str | None = None
    for patch in patches:
        if blocked and not keep_going:
            results.append(Applied(patch, None, f"not tried: {blocked} does not apply"))
            continue
        reason = _git_am(tree, patch)
        if reason is not None:
            blocked = blocked or patch.path.name
            results.append(Applied(patch, None, reason))
            continue
        results.append(Applied(patch, git(tree, "rev-parse", "HEAD").strip()))
        log.debug("applied %s", patch.path.name)
    if all(r.ok for r in results):
        (tree / ".git" / "harness-series").write_text(_stamp(patches))
    return results


def _stamp(patches: list[Patch]) -> str:
    return "\n".join(p.sha256 for p in patches)


def apply_series(tree: Path, patches: list[Patch]) -> None:
    """Reset *tree* to its base and ``git am`` the series.

    Files the series does not change keep their timestamps, so an incremental build in
    the same tree stays incremental; re-applying the series already applied does
    nothing at all.

    Raises:
        PatchError: a patch does not apply; the message names it and gives git's reason.
    """
    stamp = tree / ".git" / "harness-series"
    if stamp.exists() and stamp.read_text() == _stamp(patches):
        return  # already applied; leave generated files (autogen, builds) alone
    failed = next((r for r in try_series(tree, patches) if not r.ok), None)
    if failed is not None:
        _reset(tree)
        raise PatchError(f"{failed.patch.path.name} does not apply: {failed.reason}")


#: How stored patches are written, so that export then import gives the same bytes: no
#: commit id (ours differ from the author's), no numbering (it changes as the series
#: grows), no git version in a signature, full blob ids (abbreviations grow with the
#: repository).
FORMAT_PATCH = (
    "format-patch",
    "--zero-commit",
    "--no-numbered",
    "--no-signature",
    "--full-index",
)


def export_series(tree: Path, dest: Path, branch: str) -> int:
    """Write *tree*'s base plus the applied series as git repository *dest*, the series
    on *branch* (for ``git send-email``) and the base tagged ``harness-base``.

    Returns the number of commits on the branch. Raises InputError when *dest* exists
    and is not empty.
    """
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"{dest} exists and is not empty; export into a new directory.")
    run.run(["git", "clone", "--quiet", "--no-local", str(tree), str(dest)], env=GIT_ENV)
    git(dest, "fetch", "--quiet", "--tags", str(tree))
    git(dest, "checkout", "--quiet", "-B", branch, "HEAD")
    return int(git(dest, "rev-list", "--count", "harness-base..HEAD").strip())


def import_series(repo: Path, revisions: str, dest: Path, header: str) -> list[Path]:
    """``git format-patch`` the commits *revisions* (``A..B``) of *repo* into *dest*, and
    write *dest*/series listing them (with *header* comment lines first).

    The previous patch files of the series are replaced; nothing changes when git
    fails or the range is empty.

    Raises:
        InputError: not a git repository, a bad range, or no commits in it.
    """
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        raise InputError(f"{repo} is not a git repository.")
    if ".." not in revisions:
        raise InputError(f"--range {revisions!r} is not of the form A..B.")
    try:
        count = int(git(repo, "rev-list", "--count", revisions).strip())
    except CommandError as err:
        raise InputError(f"{repo} has no revision range {revisions}: {err.output_tail}") from err
    if count == 0:
        raise InputError(f"{revisions} holds no commits in {repo}.")
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=dest))
    try:
        names = git(repo, *FORMAT_PATCH, "-o", str(staging), revisions).split()
        files = [Path(n).name for n in names]
        listed = (dest / "series").read_text() if (dest / "series").exists() else ""
        for name in series_names(listed):
            if "/" not in name:
                (dest / name).unlink(missing_ok=True)
        for name in files:
            os.replace(staging / name, dest / name)
        (dest / "series").write_text(header + "".join(f"{n}\n" for n in files))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [dest / n for n in files]
