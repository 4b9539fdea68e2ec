"""Fetching and patching without the network: file:// tarballs, a local git repository
standing in for upstream git, wrong hashes, and patches that do not apply."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.errors import ChecksumError, InfrastructureError, InputError, PatchError
from harness.upstream import patchset, sources

pytestmark = pytest.mark.tools
GIT_ENV = {**patchset.GIT_ENV}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args],
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **GIT_ENV},
    ).stdout


def make_upstream(tmp: Path) -> tuple[Path, Path]:
    """A tiny 'upstream': a git repository tagged v1.0, and its release tarball."""
    repo = tmp / "upstream"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "main.c").write_text("int main(void)\n{\n  return 0;\n}\n")
    (repo / "README").write_text("demo\n")
    git(repo.parent, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1.0")
    git(repo, "tag", "v1.0")
    tarball = tmp / "demo-1.0.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(repo / "src", arcname="demo-1.0/src")
        tar.add(repo / "README", arcname="demo-1.0/README")
    return repo, tarball


def write_pin(tmp: Path, sha: str, routes: str) -> sources.Pin:
    path = tmp / "upstream.toml"
    path.write_text(
        f'name = "demo"\nversion = "1.0"\narchive = "demo-1.0.tar.xz"\nsha256 = "{sha}"\n' + routes
    )
    return sources.load_pin(path)


def make_patch(repo: Path, out: Path, old: str, new: str, signed: bool = True) -> Path:
    (repo / "src" / "main.c").write_text((repo / "src" / "main.c").read_text().replace(old, new))
    git(repo, "commit", "-qam", "main: change the exit status", *(["-s"] if signed else []))
    name = git(repo, "format-patch", "-1", "-o", str(out)).strip()
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    return Path(name)


def test_tarball_route_verifies_and_caches(tmp_path: Path) -> None:
    _, tarball = make_upstream(tmp_path)
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    pin = write_pin(tmp_path, sha, f'[[source]]\nkind = "tarball"\nurl = "file://{tarball}"\n')
    cache = sources.DownloadCache(tmp_path / "cache")
    fetched = sources.fetch(pin, cache)
    assert (
        fetched.archive == cache.path(pin) and fetched.archive.read_bytes() == tarball.read_bytes()
    )
    assert fetched.provenance == sources.Provenance(f"file://{tarball}", sha256=sha)
    again = sources.fetch(pin, cache)
    assert again.route == "download cache" and again.provenance is not None
    assert again.provenance.sha256 == sha and again.provenance.commit is None
    tree = tmp_path / "tree"
    sources.unpack(fetched, tree)
    assert (tree / "src" / "main.c").is_file()


def test_wrong_sha256_names_file_and_hashes_and_caches_nothing(tmp_path: Path) -> None:
    _, tarball = make_upstream(tmp_path)
    actual = hashlib.sha256(tarball.read_bytes()).hexdigest()
    pin = write_pin(tmp_path, "0" * 64, f'[[source]]\nkind = "tarball"\nurl = "file://{tarball}"\n')
    cache = sources.DownloadCache(tmp_path / "cache")
    with pytest.raises(ChecksumError) as info:
        sources.fetch(pin, cache)
    text = str(info.value)
    assert "demo-1.0.tar.xz" in text and actual in text and "0" * 64 in text
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_git_route_against_a_local_repository(tmp_path: Path) -> None:
    repo, _ = make_upstream(tmp_path)
    head = git(repo, "rev-parse", "HEAD").strip()
    routes = (
        '[[source]]\nkind = "tarball"\nurl = "file:///nonexistent/demo.tar.xz"\n'
        f'[[source]]\nkind = "git"\nurl = "file://{repo}"\ntag = "v1.0"\ncommit = "{head}"\n'
    )
    pin = write_pin(tmp_path, "1" * 64, routes)
    fetched = sources.fetch(pin, sources.DownloadCache(tmp_path / "cache"))
    assert fetched.checkout is not None and "git" in fetched.route
    assert fetched.provenance is not None
    assert fetched.provenance.commit == head and fetched.provenance.sha256 is None
    tree = tmp_path / "tree"
    sources.unpack(fetched, tree)
    assert (tree / "README").read_text() == "demo\n" and not (tree / ".git").exists()


def test_git_route_refuses_a_moved_tag(tmp_path: Path) -> None:
    """The pin names the commit v1.0 was released as; upstream then moves the tag. The
    fetch stops (no other route is tried) and names both commits."""
    repo, tarball = make_upstream(tmp_path)
    pinned = git(repo, "rev-parse", "HEAD").strip()
    (repo / "README").write_text("demo, retagged\n")
    git(repo, "commit", "-qam", "after the release")
    git(repo, "tag", "-f", "v1.0")
    moved = git(repo, "rev-parse", "HEAD").strip()
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    routes = (
        f'[[source]]\nkind = "git"\nurl = "file://{repo}"\ntag = "v1.0"\ncommit = "{pinned}"\n'
        f'[[source]]\nkind = "tarball"\nurl = "file://{tarball}"\n'
    )
    pin = write_pin(tmp_path, sha, routes)
    cache = sources.DownloadCache(tmp_path / "cache")
    with pytest.raises(ChecksumError) as info:
        sources.fetch(pin, cache)
    text = str(info.value)
    assert f"resolves to commit {moved}" in text and f"expects commit {pinned}" in text
    assert "v1.0" in text
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_work_tree_remembers_where_its_bytes_came_from(tmp_path: Path) -> None:
    """prepare_tree records the route and the commit it checked; a warm rerun (which
    fetches nothing) and the manifest's reader still know them."""
    from harness.components.trees import prepare_tree, work_tree_provenance
    from harness.components.workspace import Workspace

    repo, _ = make_upstream(tmp_path)
    head = git(repo, "rev-parse", "HEAD").strip()
    patches = tmp_path / "patches" / "demo"
    patches.mkdir(parents=True)
    (patches / "series").write_text("")
    (patches / "upstream.toml").write_text(
        'name = "demo"\nversion = "1.0"\narchive = "demo-1.0.tar.xz"\n'
        f'sha256 = "{"1" * 64}"\n[[source]]\nkind = "git"\nurl = "file://{repo}"\n'
        f'tag = "v1.0"\ncommit = "{head}"\n'
    )
    ws = Workspace(tmp_path / "out", tmp_path / "patches", cache_root=tmp_path / "cache")
    comp = ws.component("demo")
    cold = prepare_tree(comp, ws, "unused")
    want = sources.Provenance(f"git file://{repo} at v1.0", commit=head)
    assert cold.provenance == want and cold.origin == want.route
    warm = prepare_tree(comp, ws, "unused")
    assert warm.origin == "work tree" and warm.provenance == want and warm.base == cold.base
    assert work_tree_provenance(ws, comp) == want
    # A work tree unpacked before routes were recorded is kept, its route unknown.
    stamp = ws.layout.work("demo") / "base.json"
    old = json.loads(stamp.read_text())
    del old["provenance"]
    stamp.write_text(json.dumps(old))
    kept = prepare_tree(comp, ws, "unused")
    assert kept.base == cold.base and kept.provenance is None
    assert work_tree_provenance(ws, comp) is None


def test_no_route_works(tmp_path: Path) -> None:
    pin = write_pin(tmp_path, "1" * 64, '[[source]]\nkind = "tarball"\nurl = "file:///nope.tar"\n')
    with pytest.raises(InfrastructureError, match="could not be fetched by any route"):
        sources.fetch(pin, sources.DownloadCache(tmp_path / "cache"))


def test_series_applies_and_broken_patch_is_named(tmp_path: Path) -> None:
    repo, tarball = make_upstream(tmp_path)
    patches = tmp_path / "patches"
    good = make_patch(repo, patches, "return 0;", "return 1;")
    tree = tmp_path / "tree"
    sources.unpack(sources.Fetched(archive=tarball), tree)
    patchset.commit_base(tree, "demo 1.0")
    series = [patchset.Patch.read(good)]
    patchset.apply_series(tree, series)
    assert "return 1;" in (tree / "src" / "main.c").read_text()
    patchset.apply_series(tree, series)  # idempotent
    bad = tmp_path / "0001-stale.patch"  # a hunk whose context is not in the base
    bad.write_text(good.read_text().replace("-  return 0;", "-  return 42;"))
    with pytest.raises(PatchError) as info:
        patchset.apply_series(tree, [patchset.Patch.read(bad)])
    assert bad.name in str(info.value) and "does not apply" in str(info.value)
    assert "return 0;" in (tree / "src" / "main.c").read_text()  # left at the base
    assert not (tree / ".git" / "rebase-apply").exists()


def test_fill_empty_dir_quirk(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "Lib" / "brotli" / "c").mkdir(parents=True)
    (tree / "Lib" / "brotli" / "c" / "decode.c").write_text("/* brotli */\n")
    (tree / "BaseTools" / "brotli").mkdir(parents=True)  # present but empty, as in Debian
    pin = write_pin(
        tmp_path,
        "1" * 64,
        '[[source]]\nkind = "tarball"\nurl = "file:///x"\n'
        '[[quirk]]\nkind = "fill-empty-dir"\npath = "BaseTools/brotli"\nfrom = "Lib/brotli"\n',
    )
    assert sources.apply_quirks(pin, tree) == ["filled BaseTools/brotli from Lib/brotli"]
    assert (tree / "BaseTools" / "brotli" / "c" / "decode.c").read_text() == "/* brotli */\n"
    assert sources.apply_quirks(pin, tree) == []  # already filled: nothing to do


def test_local_tree_with_and_without_the_series(tmp_path: Path) -> None:
    from harness.components.trees import prepare_tree
    from harness.components.workspace import Workspace

    repo, _ = make_upstream(tmp_path)
    patches = tmp_path / "patches" / "demo"
    patch = make_patch(repo, patches, "return 0;", "return 1;")
    (patches / "series").write_text(patch.name + "\n")
    (patches / "upstream.toml").write_text(
        'name = "demo"\nversion = "1.0"\narchive = "demo-1.0.tar.xz"\n'
        f'sha256 = "{"1" * 64}"\n[[source]]\nkind = "tarball"\nurl = "file:///x"\n'
    )
    ws = Workspace(tmp_path / "out", tmp_path / "patches", cache_root=tmp_path / "cache")
    comp = ws.component("demo")
    tree = prepare_tree(comp, ws, "unused", local_tree=repo, apply=True)
    assert "return 1;" in (tree.path / "src" / "main.c").read_text()
    assert "return 0;" in (repo / "src" / "main.c").read_text()  # the author's tree is untouched
    plain = prepare_tree(comp, ws, "unused", local_tree=repo, apply=False)
    assert "return 0;" in (plain.path / "src" / "main.c").read_text()


def test_archive_of_two_directories_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tarball = tmp_path / "two.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(tmp_path / "a", arcname="a")
        tar.add(tmp_path / "b", arcname="b")
    tree = tmp_path / "tree"
    with pytest.raises(InputError, match="one directory"):
        sources.unpack(sources.Fetched(archive=tarball), tree)
    assert list(tmp_path.glob(".tree-unpack-*")) == []


def test_archive_top_directory_becomes_the_tree(tmp_path: Path) -> None:
    _, tarball = make_upstream(tmp_path)
    tree = tmp_path / "work" / "src"
    tree.mkdir(parents=True)
    mode = tree.stat().st_mode
    sources.unpack(sources.Fetched(archive=tarball), tree)
    assert sorted(p.name for p in tree.iterdir()) == ["README", "src"]
    assert tree.stat().st_mode == mode
    assert [p.name for p in tree.parent.iterdir()] == ["src"]


def test_an_archive_of_another_owner_unpacks_as_ours(tmp_path: Path) -> None:
    """Release tarballs carry their maker's uid (QEMU's: 1000). Unpacked by root as they
    are, the tree would belong to that user and git would refuse it ("dubious
    ownership"); the tree must be the unpacking user's, and a git repository."""
    top = tmp_path / "pkg-1.0"
    (top / "src").mkdir(parents=True)
    (top / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    tarball = tmp_path / "pkg-1.0.tar.gz"

    def foreign(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = 4242, 4242, "maker", "maker"
        return info

    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(top, arcname=top.name, filter=foreign)
    tree = tmp_path / "work" / "src"
    sources.unpack(sources.Fetched(archive=tarball), tree)
    owners = {p.stat().st_uid for p in [tree, *tree.rglob("*")]}
    assert owners == {os.getuid()}
    assert patchset.commit_base(tree, "pkg 1.0")


def pin_dir(tmp: Path, routes: str, name: str = "demo") -> Path:
    """patches/<name> with an empty series and a release pin with *routes* (and any
    [master] table) after it."""
    patches = tmp / "patches" / name
    patches.mkdir(parents=True)
    (patches / "series").write_text("")
    (patches / "upstream.toml").write_text(
        f'name = "{name}"\nversion = "1.0"\narchive = "demo-1.0.tar.xz"\n'
        f'sha256 = "{"1" * 64}"\n' + routes
    )
    return patches


def master_pin_dir(tmp: Path, repo: Path, commit: str, name: str = "demo") -> Path:
    """patches/<name> with a release pin and a [master] pin at *commit* of *repo*."""
    return pin_dir(
        tmp,
        '[[source]]\nkind = "tarball"\nurl = "file:///nonexistent"\n'
        f'[master]\nurl = "file://{repo}"\nbranch = "master"\ncommit = "{commit}"\n',
        name,
    )


def grow_master(repo: Path) -> str:
    """Upstream's development goes on after v1.0: one more commit on master."""
    git(repo, "checkout", "-qB", "master")
    (repo / "src" / "new.c").write_text("int new_feature;\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "src: a feature after v1.0")
    return git(repo, "rev-parse", "HEAD").strip()


def test_master_route_checks_out_the_pinned_commit_of_the_branch(tmp_path: Path) -> None:
    """``--upstream master`` against a local repository: the commit the pin names, on
    the branch it names, with the master series (or the release series where there is
    none), in a tree stamped by the commit."""
    from harness.components.trees import prepare_tree
    from harness.components.workspace import Workspace
    from harness.flows.builds import master_workspace

    repo, _ = make_upstream(tmp_path)
    commit = grow_master(repo)
    git(repo, "commit", "-q", "--allow-empty", "-m", "master moves on")
    patches = master_pin_dir(tmp_path, repo, commit)
    out = tmp_path / "patches-out"
    (patches / "master").mkdir()
    mine = make_patch(repo, out, "return 0", "return 2")
    (patches / "master" / mine.name).write_bytes(mine.read_bytes())
    (patches / "master" / "series").write_text(f"# for master\n{mine.name}\n")
    notes: list[str] = []
    base = Workspace(tmp_path / "out", tmp_path / "patches", cache_root=tmp_path / "cache")
    ws = master_workspace(base, ("demo",), notes.append)
    comp = ws.component("demo")
    assert comp.pin.version == f"master {commit[:12]}" and comp.pin.commit == commit
    assert [p.path.name for p in comp.patches] == [mine.name] and not notes
    assert base.component("demo").patches == ()  # the release series stays the pin's
    tree = prepare_tree(comp, ws, "unused")
    assert tree.provenance == sources.Provenance(
        f"git file://{repo} branch master at {commit}", commit=commit
    )
    assert (tree.path / "src" / "new.c").is_file()  # the commit, not the tag ...
    assert "return 2" in (tree.path / "src" / "main.c").read_text()  # ... with the series
    again = prepare_tree(comp, ws, "unused")
    assert again.origin == "work tree" and again.provenance == tree.provenance


def test_master_route_refuses_a_commit_the_branch_does_not_have(tmp_path: Path) -> None:
    """A commit that exists upstream but not on the named branch (a force-pushed
    branch, a pull request's head) is not master: the fetch stops and says so."""
    repo, _ = make_upstream(tmp_path)
    grow_master(repo)
    git(repo, "checkout", "-qb", "side", "v1.0")
    (repo / "README").write_text("not on master\n")
    git(repo, "commit", "-qam", "a side branch")
    side = git(repo, "rev-parse", "HEAD").strip()
    patches = master_pin_dir(tmp_path, repo, side)
    pin = sources.load_master(patches / "upstream.toml")
    assert pin is not None
    cache = sources.DownloadCache(tmp_path / "cache")
    with pytest.raises(ChecksumError) as info:
        sources.fetch(pin, cache)
    assert f"branch master does not contain commit {side}" in str(info.value)
    assert not (tmp_path / "cache" / "git" / f"demo-{side}").exists()


def test_components_without_master_keep_their_pin(tmp_path: Path) -> None:
    from harness.components.workspace import Workspace
    from harness.flows.builds import master_workspace

    pin_dir(tmp_path, '[[source]]\nkind = "tarball"\nurl = "file:///nonexistent"\n')
    notes: list[str] = []
    base = Workspace(tmp_path / "out", tmp_path / "patches", cache_root=tmp_path / "cache")
    ws = master_workspace(base, ("demo",), notes.append)
    assert ws.component("demo").pin.version == "1.0"
    assert notes == ["patches/demo/upstream.toml names no [master]; demo stays on its pin"]


def test_grub_ci_commit_check_runs_the_trees_own_script(tmp_path: Path) -> None:
    """GRUB master's GitLab job (its script vendored in tests/data, see its README) run
    on a series as ``patches.check`` runs it: it passes signed commits and names the
    unsigned one; a tree without the script has no such check."""
    import shutil

    from harness.upstream import style

    repo, _ = make_upstream(tmp_path)
    assert style.grub_ci_commit_checks(repo, git(repo, "rev-parse", "HEAD").strip()) is None
    script = repo / style.GRUB_CI_SIGNOFF
    script.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "data" / "grub-ci" / "metadata-sob.sh", script)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "CI scripts")
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "README").write_text("signed\n")
    git(repo, "commit", "-qsam", "README: a signed change")
    assert style.grub_ci_commit_checks(repo, base) == []
    (repo / "README").write_text("unsigned\n")
    git(repo, "commit", "-qam", "README: an unsigned change")
    unsigned = git(repo, "rev-parse", "HEAD").strip()
    assert style.grub_ci_commit_checks(repo, base) == [
        f"Commit {unsigned} is missing the Signed-off-by label!"
    ]
    assert "harness-ci-target" not in git(repo, "branch")
