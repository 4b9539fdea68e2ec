"""The patch author's workflow on the real pinned sources: patches.check on good and
deliberately broken series, import/export round trips, and rebase onto another version.

Each broken series is our real series with one thing wrong; every check of it must
fail naming the patch and the problem, and nothing gets built.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.components import registry
from harness.components.pipeline import builder_image
from harness.components.trees import prepare_tree
from harness.components.workspace import Workspace
from harness.config import resolve
from harness.errors import InputError
from harness.flows import patchcheck
from harness.flows.patchcheck import Check
from harness.upstream import patchset
from harness.verdict import Verdict
from tests.conftest import ROOT, workspace

pytestmark = [
    pytest.mark.docker,
    pytest.mark.tools,
    pytest.mark.slow,
    # The CLI checks wait for out/ while another worker builds in it.
    pytest.mark.timeout(2400),
]
GRUB_PATCH = next((ROOT / "patches" / "grub").glob("0001-*.patch")).name
OVMF_PATCH = next((ROOT / "patches" / "ovmf").glob("0001-*.patch")).name


@pytest.fixture(scope="module")
def ws_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private workspace for every series here: the unpacked trees are shared."""
    return tmp_path_factory.mktemp("patches-ws")


def series(
    tmp: Path, component: str, edit: Callable[[str], str] | None = None, pattern: str = "0001-*"
) -> Path:
    """A patches root holding our series for *component*, the patches matching *pattern*
    (the first, by default) edited by *edit*."""
    root = tmp / "patches"
    shutil.copytree(ROOT / "patches" / component, root / component)
    if edit is not None:
        changed = 0
        for patch in sorted((root / component).glob(f"{pattern}.patch")):
            before = patch.read_bytes().decode()  # bytes: edk2 files have CRLF lines
            after = edit(before)
            changed += after != before
            patch.write_bytes(after.encode())
        assert changed, "the edit changed nothing"
    return root


def check(ws_root: Path, patches: Path, component: str) -> list[Check]:
    return patchcheck.run_checks(component, workspace(ws_root, patches), quick=True)


def by_name(checks: list[Check]) -> dict[str, Check]:
    """By check name, the first of each: the first patch's per-patch checks (the one
    these tests break), then the series-wide ones."""
    first: dict[str, Check] = {}
    for c in checks:
        first.setdefault(c.name, c)
    return first


def test_our_grub_series_passes(ws_root: Path, tmp_path: Path) -> None:
    root = series(tmp_path, "grub")
    checks = check(ws_root, root, "grub")
    # Four checks per patch, then GRUB's unit tests, which run with --quick too.
    patches = len(patchset.read_series(root / "grub"))
    ran = [c.outcome for c in checks if c.outcome is not Verdict.SKIPPED]
    assert ran == [Verdict.PASSED] * (4 * patches + len(registry.get("grub").unit_tests))
    assert {c.name for c in checks} == {
        "signed-off-by",
        "subject",
        "applies",
        "style",
        "unit-test",
        "build",
        "boot",
    }
    unit = by_name(checks)["unit-test"]
    assert unit.subject == "efisecret_unit_test" and unit.outcome is Verdict.PASSED


def test_a_hunk_that_no_longer_applies(ws_root: Path, tmp_path: Path) -> None:
    def edit(text: str) -> str:  # a context line of the Makefile.core.def hunk
        return text.replace("\n module = {\n", "\n module = {  \n", 1)

    checks = by_name(check(ws_root, series(tmp_path, "grub", edit), "grub"))
    applies = checks["applies"]
    assert applies.failed and applies.subject == GRUB_PATCH
    assert "patch failed: grub-core/Makefile.core.def" in applies.reason
    assert checks["build"].outcome is Verdict.SKIPPED
    assert f"{GRUB_PATCH} failed applies" in checks["build"].reason


def test_a_patch_without_signed_off_by(ws_root: Path, tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return re.sub(r"^Signed-off-by: .*\n", "", text, flags=re.MULTILINE)

    checks = by_name(check(ws_root, series(tmp_path, "grub", edit), "grub"))
    dco = checks["signed-off-by"]
    assert dco.failed and dco.subject == GRUB_PATCH
    assert dco.reason == "no Signed-off-by line (DCO)"
    assert not checks["applies"].failed  # the rest is still checked
    assert checks["build"].outcome is Verdict.SKIPPED


def test_a_signed_off_by_from_someone_else(ws_root: Path, tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return re.sub(
            r"^Signed-off-by: .*$", "Signed-off-by: A N Other <other@example.org>", text, flags=re.M
        )

    dco = by_name(check(ws_root, series(tmp_path, "grub", edit), "grub"))["signed-off-by"]
    assert dco.failed and "no Signed-off-by from the author" in dco.reason


def test_a_grub_style_violation(ws_root: Path, tmp_path: Path) -> None:
    def edit(text: str) -> str:  # an added line of the new efisecret.c
        return text.replace(
            "+  grub_key_protector_unregister (&efisecret_key_protector);",
            "+  grub_key_protector_unregister (&efisecret_key_protector); // bye",
        )

    checks = by_name(check(ws_root, series(tmp_path, "grub", edit), "grub"))
    style = checks["style"]
    assert style.failed and style.subject == GRUB_PATCH
    assert "grub-core/commands/efi/efisecret.c: C++ comment" in style.reason
    assert not checks["applies"].failed


def test_an_edk2_style_violation_caught_by_patchcheck(ws_root: Path, tmp_path: Path) -> None:
    def edit(text: str) -> str:  # indent an added grub.sh line with a tab
        return re.sub(r"^\+ {2,}(?=\S)", "+\t", text, count=1, flags=re.MULTILINE)

    checks = check(ws_root, series(tmp_path, "ovmf", edit), "ovmf")
    style = next(c for c in checks if c.name == "style" and c.subject == OVMF_PATCH)
    assert style.failed
    assert "PatchCheck.py" in style.reason and "Tab character used" in style.reason


def test_a_bad_subject(ws_root: Path, tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return re.sub(
            r"^Subject: \[PATCH\] .*\n .*\n", "Subject: [PATCH] fix stuff.\n", text, flags=re.M
        )

    subject = by_name(check(ws_root, series(tmp_path, "grub", edit), "grub"))["subject"]
    assert subject.failed and "full stop" in subject.reason and "'area: Summary'" in subject.reason


def test_patches_after_one_that_fails_are_not_tried(ws_root: Path, tmp_path: Path) -> None:
    root = series(tmp_path, "grub")
    directory = root / "grub"
    first = directory / GRUB_PATCH
    first.write_bytes(first.read_bytes().replace(b"\n module = {\n", b"\n module = {  \n", 1))
    second = directory / "0002-second.patch"
    shutil.copy(ROOT / "patches" / "grub" / GRUB_PATCH, second)
    (directory / "series").write_text(f"{GRUB_PATCH}\n0002-second.patch\n")
    applies = [c for c in check(ws_root, root, "grub") if c.name == "applies"]
    assert [c.subject for c in applies] == [GRUB_PATCH, "0002-second.patch"]
    assert applies[1].failed and applies[1].reason == f"not tried: {GRUB_PATCH} does not apply"


def test_export_then_import_round_trips_byte_for_byte(ws_root: Path, tmp_path: Path) -> None:
    for component in ("grub", "ovmf"):
        ws = workspace(ws_root, series(tmp_path / component, component))
        repo = tmp_path / f"{component}.git"
        branch, count = patchcheck.export(component, ws, repo)
        ours = patchset.read_series(ROOT / "patches" / component)
        assert count == len(ours)
        log = subprocess.run(
            ["git", "-C", str(repo), "log", "--reverse", "--format=%s", f"harness-base..{branch}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert log.splitlines() == [p.subject for p in ours]
        target = tmp_path / "imported"
        shutil.copytree(ROOT / "patches" / component, target / component)
        for p in (target / component).glob("0*.patch"):
            p.unlink()
        patchcheck.import_(component, Workspace(ws_root, target), repo, f"harness-base..{branch}")
        # The release series' files (a master/ series of its own is not exported here).
        for original in (p for p in (ROOT / "patches" / component).iterdir() if p.is_file()):
            assert (target / component / original.name).read_bytes() == original.read_bytes()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_import_refuses_what_is_not_a_range(ws_root: Path, tmp_path: Path) -> None:
    root = series(tmp_path, "grub")
    before = _files(root)
    ws = Workspace(ws_root, root)
    with pytest.raises(InputError, match="is not a git repository"):
        patchcheck.import_("grub", ws, tmp_path, "a..b")
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "x"],
        check=True,
        env={
            "GIT_AUTHOR_NAME": "a",
            "GIT_AUTHOR_EMAIL": "a@b",
            "GIT_COMMITTER_NAME": "a",
            "GIT_COMMITTER_EMAIL": "a@b",
            "HOME": str(tmp_path),
        },
    )
    with pytest.raises(InputError, match="holds no commits"):
        patchcheck.import_("grub", ws, repo, "HEAD..HEAD")
    with pytest.raises(InputError, match="has no revision range"):
        patchcheck.import_("grub", ws, repo, "nope..HEAD")
    assert {
        str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
    } == before


def test_rebase_onto_an_older_grub_names_the_patch_that_needs_work(tmp_path: Path) -> None:
    checks = patchcheck.rebase("grub", "2.12", resolve(workspace=str(tmp_path)))
    first = checks[0]
    assert first.failed and first.subject == GRUB_PATCH
    assert "needs work on grub 2.12" in first.reason
    assert "grub-core/Makefile.core.def" in first.reason


def test_rebase_onto_master_tries_the_release_series_on_a_tree_of_it(
    ws_root: Path, tmp_path: Path
) -> None:
    """``--upstream master --tree DIR`` (no network to upstream here): the release series
    on the tree given as master's. The pinned 2.14 tree stands in for it, so every patch
    applies; with one context line of 0001 changed there, 0001 needs work."""
    ws = workspace(ws_root)
    comp = ws.component("grub")
    base = prepare_tree(comp, ws, builder_image("bookworm", ws).tag, apply=False)
    tree = tmp_path / "grub-master"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(base.path), "archive", "harness-base"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    cfg = resolve(workspace=str(tmp_path / "out"), upstream="master")
    checks = patchcheck.rebase("grub", "", cfg, tree)
    assert [c.outcome for c in checks] == [Verdict.PASSED] * len(comp.patches)
    assert f"on grub master edd057b5cc65, tree {tree}" in checks[0].reason
    core = tree / "grub-core" / "Makefile.core.def"
    text = core.read_text()  # a context line of 0001's Makefile.core.def hunk
    core.write_text(text.replace("  name = tpm2_key_protector;", "  name = tpm2_protector;", 1))
    first = patchcheck.rebase("grub", "", cfg, tree)[0]
    assert first.failed and first.subject == GRUB_PATCH
    assert "needs work on grub master edd057b5cc65" in first.reason


def test_cli_check_quick_passes_for_our_series() -> None:
    for component in ("grub", "ovmf"):
        proc = subprocess.run(
            [str(ROOT / "inv"), "patches.check", component, "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert any(ln.startswith("PASS  style") for ln in lines)
        if component == "grub":
            assert any(ln.startswith("PASS  unit-test     efisecret_unit_test") for ln in lines)
        assert lines[-1].endswith("0 failed")


def broken_parser(text: str) -> str:
    """A parser that accepts two passphrase entries (the line 0001 adds, and the later
    patches of the parser keep as context)."""
    for mark in ("+", " "):
        text = text.replace(
            f"{mark}  if (err == GRUB_ERR_NONE && count > 1)",
            f"{mark}  if (err == GRUB_ERR_NONE && count > 2)",
        )
    return text


@pytest.mark.long
def test_a_broken_parser_on_a_local_tree_fails_its_unit_test(ws_root: Path, tmp_path: Path) -> None:
    """--tree: the author's own checkout of upstream replaces the pin as the base, and is
    built (never cached) with GRUB's own unit test. A series whose parser accepts two
    passphrase entries: the unit test, built from that tree, says which assertion failed,
    the build stops, and nothing after it runs. (One GRUB build proves both: the local
    tree's, and a unit test's failure stopping the check.)"""
    ws = workspace(ws_root, series(tmp_path, "grub", broken_parser, pattern="*"))
    with ws.locked():  # the pinned tree, for its archive
        prepare_tree(ws.component("grub"), ws, builder_image(registry.get("grub").builder, ws).tag)
    tree = tmp_path / "my-grub"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ws.layout.work("grub") / "src"), "archive", "harness-base"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    checks = by_name(patchcheck.run_checks("grub", ws, local_tree=tree, quick=True))
    assert checks["applies"].outcome is Verdict.PASSED
    assert checks["applies"].reason == f"on {tree}"
    unit = checks["unit-test"]
    assert unit.failed and unit.subject == "efisecret_unit_test"
    assert "two passphrase entries: accepted" in unit.reason
    assert checks["build"].outcome is Verdict.SKIPPED
    assert "efisecret_unit_test failed unit-test" in checks["build"].reason
    # The same tree with the hunk's context changed no longer takes the patch.
    makefile = tree / "grub-core" / "Makefile.core.def"
    makefile.write_text(makefile.read_text().replace("module = {\n", "module = {  \n"))
    checks = by_name(patchcheck.run_checks("grub", ws, local_tree=tree, quick=True))
    assert checks["applies"].failed and "grub-core/Makefile.core.def" in checks["applies"].reason
