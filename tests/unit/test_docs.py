"""The docs and the CLI say the same: every task, option and scenario the CLI has is
documented, and nothing documented is gone.

docs/tasks.md has one section per task (``## `./inv NAME` ``), a synopsis in a code
block and one bullet per option; the README's task list names every task; docs/
scenarios.md has one row per scenario of the catalogue. Links between the docs point at
files that exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.boots import matrix, ordinary, scenarios
from harness.program import HarnessProgram

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _cli() -> dict[str, dict[str, str]]:
    """Each task -> its options as documented: the flag (``--name``, ``--no-name`` for a
    switch that is on by default, ``NAME`` for a positional argument) -> its kind."""
    program = HarnessProgram()
    program.create_config()
    program.parse_core(["inv", "--search-root", str(ROOT)])
    program.parse_collection()
    parser = program._make_parser()
    tasks: dict[str, dict[str, str]] = {}
    for name in program.collection.task_names:
        options = {}
        for arg in parser.contexts[name].args.values():
            long = arg.names[0]
            if arg.positional:
                options[long.upper()] = "positional"
            elif arg.kind is bool and arg.default is True:
                options[f"--no-{long}"] = "switch"
            elif len(long) == 1:
                options[f"-{long}"] = "value" if arg.takes_value else "switch"
            else:
                options[f"--{long}"] = "value" if arg.takes_value else "switch"
        tasks[name] = options
    return tasks


CLI = _cli()


def _sections() -> dict[str, str]:
    text = (DOCS / "tasks.md").read_text()
    parts = re.split(r"^## `\./inv ([\w.-]+)`\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


SECTIONS = _sections()


def test_every_task_has_its_section_and_no_section_is_of_a_task_gone() -> None:
    assert sorted(SECTIONS) == sorted(CLI)


@pytest.mark.parametrize("name", sorted(CLI))
def test_every_option_is_documented_and_every_documented_option_exists(name: str) -> None:
    body = SECTIONS.get(name, "")
    bullets = re.findall(r"^- `(-{1,2}[\w-]+|[A-Z][A-Z_-]*)[^`]*`", body, flags=re.M)
    assert sorted(bullets) == sorted(CLI[name]), f"docs/tasks.md, {name}"
    synopsis = re.search(r"```\n(.*?)\n```", body, flags=re.S)
    assert synopsis, f"docs/tasks.md, {name}: no synopsis"
    assert f"./inv {name}" in synopsis.group(1), f"docs/tasks.md, {name}: another task's synopsis"
    # Long options only: a single '-' also starts a range or a word (tmp_tk.bin).
    for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", synopsis.group(1)):
        assert flag in CLI[name] or f"--no-{flag[2:]}" in CLI[name], (
            f"docs/tasks.md, {name}: the synopsis names {flag}, which the task has not"
        )


def test_the_readme_names_every_task() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("\n## Tasks\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(?:\./inv )?([a-z][\w]*(?:[.-][\w]+)*)(?: [A-Z]+)?`", listed))
    assert set(CLI) <= named, f"the README's task list lacks {sorted(set(CLI) - named)}"
    ghosts = {n for n in named if ("." in n or "-" in n) and n not in CLI}
    assert not ghosts, f"the README's task list names tasks that are gone: {sorted(ghosts)}"


def test_every_scenario_is_documented_and_every_documented_one_exists() -> None:
    text = (DOCS / "scenarios.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)` \|", text, flags=re.M)
    assert len(rows) == len(set(rows))
    assert sorted(rows) == sorted([*scenarios.SCENARIOS, ordinary.NAME])
    in_matrix = {name for name, _ in matrix.MATRIX}
    for name in rows:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert row.endswith("| matrix |") == (name in in_matrix), row


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_links_point_at_files_that_exist(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which is gone"
