"""``patches.export --merge-request`` against a local repository standing in for GRUB's:
the branch on upstream's own commit, signed off by the user's git identity, and the
refusals that keep a description from claiming what no check showed.

The report the description is written from is made here with :func:`save_report` from
checks written by hand: what is tested is the export and its refusals, not a verdict
(the real checks and boots are tested in test_patches and test_boot).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.boots.prepare import Firmware
from harness.components.workspace import Workspace
from harness.errors import InputError
from harness.flows import patchcheck
from harness.flows.builds import master_workspace
from harness.flows.patchcheck import Check
from harness.verdict import Verdict
from tests.integration.test_sources import (
    git,
    grow_master,
    make_patch,
    make_upstream,
    master_pin_dir,
)

pytestmark = pytest.mark.tools


@pytest.fixture
def author(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git identity of the user's own, in a global config of this test's."""
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Ada Author\n\temail = ada@example.org\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return config


def grub_master(tmp: Path) -> tuple[Path, str, Workspace]:
    """A 'GRUB' upstream with a master commit after its release, our one-patch master
    series for it, and the master workspace."""
    repo, _ = make_upstream(tmp)
    commit = grow_master(repo)
    patches = master_pin_dir(tmp, repo, commit, "grub")
    (patches / "master").mkdir()
    mine = make_patch(repo, tmp / "made", "return 0", "return 2")
    (patches / "master" / mine.name).write_bytes(mine.read_bytes())
    (patches / "master" / "series").write_text(f"{mine.name}\n")
    base = Workspace(tmp / "out", tmp / "patches", cache_root=tmp / "cache")
    return repo, commit, master_workspace(base, ("grub",))


def report(ws: Workspace, tmp: Path, *, booted: bool) -> None:
    comp = ws.component("grub")
    checks = [Check("signed-off-by", comp.patches[0].path.name, Verdict.PASSED)]
    firmware = None
    if booted:
        fd = tmp / "OVMF.fd"
        fd.write_bytes(b"firmware")
        firmware = Firmware(fd, bytes(range(32)))
        checks.append(Check("boot", "passwordless-luks1", Verdict.PASSED, "unlocked, no prompt"))
    else:
        checks.append(Check("boot", "grub", Verdict.SKIPPED, "--quick"))
    patchcheck.save_report(ws, comp, None, checks, firmware)


def test_the_branch_sits_on_upstreams_commit_signed_off_by_you(
    tmp_path: Path, author: Path
) -> None:
    repo, commit, ws = grub_master(tmp_path)
    report(ws, tmp_path, booted=True)
    dest = tmp_path / "mr"
    branch, count, text = patchcheck.merge_request("grub", ws, dest, repo)
    assert (branch, count) == ("harness/grub", 1)
    assert git(dest, "rev-parse", "HEAD~1").strip() == commit  # upstream's own history
    assert git(dest, "log", "-1", "--format=%an|%cn <%ce>").strip() == (
        "harness|Ada Author <ada@example.org>"
    )
    trailers = git(dest, "log", "-1", "--format=%(trailers:key=Signed-off-by,valueonly)")
    assert trailers.split("\n")[:2] == [
        "harness <harness@localhost>",
        "Ada Author <ada@example.org>",
    ]
    assert "return 2" in git(dest, "show", "HEAD:src/main.c")
    description = text.read_text()
    assert text == tmp_path / "mr.merge-request.md"
    assert f"commit `{commit}`" in description
    assert (
        bytes(range(32)).hex() in description and "| passwordless-luks1 | passed |" in description
    )
    assert "- main: change the exit status" in description


def test_refused_without_a_git_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _, ws = grub_master(tmp_path)
    report(ws, tmp_path, booted=True)
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    with pytest.raises(InputError, match=r"no user\.name and user\.email"):
        patchcheck.merge_request("grub", ws, tmp_path / "mr", repo)
    assert not (tmp_path / "mr").exists()


def test_refused_without_a_full_check_of_this_series(tmp_path: Path, author: Path) -> None:
    repo, _, ws = grub_master(tmp_path)
    dest = tmp_path / "mr"
    with pytest.raises(InputError, match=r"no patches\.check report"):
        patchcheck.merge_request("grub", ws, dest, repo)
    report(ws, tmp_path, booted=False)
    with pytest.raises(InputError, match="booted nothing"):
        patchcheck.merge_request("grub", ws, dest, repo)
    report(ws, tmp_path, booted=True)
    series = ws.patches / "grub" / "master"
    patch = next(series.glob("*.patch"))
    patch.write_text(patch.read_text().replace("return 2", "return 3"))
    with pytest.raises(InputError, match="changed since the last check"):
        patchcheck.merge_request("grub", ws, dest, repo)
    assert not dest.exists()


def test_refused_when_the_clone_lacks_the_commit(tmp_path: Path, author: Path) -> None:
    _, _, ws = grub_master(tmp_path)
    report(ws, tmp_path, booted=True)
    other, _ = make_upstream(tmp_path / "other")
    with pytest.raises(InputError, match="does not have commit"):
        patchcheck.merge_request("grub", ws, tmp_path / "mr", other)
    assert not (tmp_path / "mr").exists()


def test_import_into_the_master_series_leaves_the_release_series(tmp_path: Path) -> None:
    """``patches.import --upstream master``: a reworked branch becomes
    patches/<component>/master (made, with the release series' licence line), and the
    release series is not touched."""
    repo, _, ws = grub_master(tmp_path)
    release = ws.patches / "grub"
    (release / "series").write_text("# SPDX-License-Identifier: GPL-3.0-or-later\n")
    shutil.rmtree(release / "master")
    before = (release / "series").read_text()
    (repo / "README").write_text("reworked for master\n")
    git(repo, "commit", "-qsam", "README: rework for master")
    written = patchcheck.import_("grub", ws, repo, "HEAD~1..HEAD", "master")
    assert [p.parent for p in written] == [release / "master"]
    series = (release / "master" / "series").read_text().splitlines()
    assert series[0] == "# SPDX-License-Identifier: GPL-3.0-or-later"
    assert series[-1] == written[0].name and "rework-for-master" in written[0].name
    assert (release / "series").read_text() == before
