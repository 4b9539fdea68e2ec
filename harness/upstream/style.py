"""Upstream's own style checkers, run on one applied patch of a series.

Each takes the source tree being patched and the applied patch, and returns the
problems found (empty: clean). The checkers come from the very tree being patched,
as a maintainer would run them.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness import run
from harness.errors import CommandError
from harness.upstream.patchset import GIT_ENV, Applied, git

#: Style checker per component: (source tree, the applied patch) -> problems found.
StyleChecker = Callable[[Path, Applied], list[str]]


def edk2_patchcheck(tree: Path, applied: Applied) -> list[str]:
    """edk2's ``BaseTools/Scripts/PatchCheck.py`` from the very tree being patched."""
    script = tree / "BaseTools" / "Scripts" / "PatchCheck.py"
    if not script.is_file():
        return [f"{script.relative_to(tree)} is missing from the tree"]
    proc = run.run(["python3", str(script), str(applied.patch.path)], cwd=tree, check=False)
    if proc.returncode == 0:
        return []
    out = proc.stdout.decode(errors="replace")
    return [ln.strip(" *") for ln in out.splitlines() if ln.startswith(" *")] or [
        f"PatchCheck.py exited with status {proc.returncode}"
    ]


def checkpatch(tree: Path, applied: Applied) -> list[str]:
    """The tree's own ``scripts/checkpatch.pl``, QEMU's or Linux's (QEMU's is a fork of
    Linux's and takes the same options); errors only, warnings are advice."""
    script = tree / "scripts" / "checkpatch.pl"
    if not script.is_file():
        return [f"{script.relative_to(tree)} is missing from the tree"]
    proc = run.run(
        ["perl", str(script), "--no-color", str(applied.patch.path)], cwd=tree, check=False
    )
    if proc.returncode == 0:
        return []
    out = proc.stdout.decode(errors="replace")
    return [ln.removeprefix("ERROR: ") for ln in out.splitlines() if ln.startswith("ERROR:")] or [
        f"checkpatch.pl exited with status {proc.returncode}"
    ]


def grub_conventions(tree: Path, applied: Applied) -> list[str]:
    """GRUB has no checker: ``git show --check`` (whitespace errors) plus what its
    developer manual (docs/grub-dev.texi, "Coding style") asks of C: only ``/* */``
    comments, and multi-line comments that open with a bare ``/*``."""
    assert applied.commit is not None
    problems = []
    try:
        git(tree, "show", "--check", "--format=", applied.commit)
    except CommandError as err:
        problems += [
            ln for ln in err.output_tail.splitlines() if ln.strip() and not ln.startswith("+")
        ][:5]
    diff = git(tree, "show", "--format=", "--unified=0", applied.commit)
    path = ""
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[4:].removeprefix("b/")
            continue
        if not path.endswith((".c", ".h")) or not line.startswith("+"):
            continue
        code = line[1:]
        if re.search(r"(?:^|[^:\"'])//", code) and not re.search(r"\"[^\"]*//", code):
            problems.append(f"{path}: C++ comment (GRUB wants /* */): {code.strip()}")
        stripped = code.strip()
        if stripped.startswith("/*") and "*/" not in stripped and stripped != "/*":
            problems.append(f"{path}: a multi-line comment must open with a bare /*: {stripped}")
    return problems


#: GRUB's GitLab CI checks each commit of a merge request with this script (its
#: ``signed-off-by`` job, .gitlab-ci/yml/metadata.yml); trees before GRUB moved to
#: GitLab (2.14's release archive among them) do not have it.
GRUB_CI_SIGNOFF = ".gitlab-ci/script/metadata-sob.sh"


def grub_ci_commit_checks(tree: Path, base: str) -> list[str] | None:
    """Run the tree's own GitLab CI commit check on the commits after *base* as a merge
    request's pipeline runs it: in a clone whose ``origin`` holds the target branch,
    with GitLab's variables set. None when the tree has no such script; else the
    problems (empty: it passed)."""
    script = tree / GRUB_CI_SIGNOFF
    if not script.is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="grub-ci-") as tmp:
        clone = Path(tmp) / "mr"
        run.run(["git", "clone", "--quiet", "--no-checkout", str(tree), str(clone)], env=GIT_ENV)
        git(tree, "branch", "--force", "harness-ci-target", base)
        try:
            proc = run.run(
                ["bash", str(script)],
                cwd=clone,
                env={
                    **GIT_ENV,
                    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "harness-ci-target",
                    "CI_MERGE_REQUEST_DIFF_BASE_SHA": base,
                    "CI_COMMIT_SHA": git(tree, "rev-parse", "HEAD").strip(),
                },
                check=False,
            )
        finally:
            git(tree, "branch", "--delete", "--force", "harness-ci-target")
    if proc.returncode == 0:
        return []
    out = proc.stdout.decode(errors="replace")
    found = [ln.strip() for ln in out.splitlines() if "missing" in ln.lower()]
    return found or [f"{GRUB_CI_SIGNOFF} exited with status {proc.returncode}"]
