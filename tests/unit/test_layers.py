"""The package's layers: every import points to a lower floor, and no module cycle.

The floors are the "Layout" drawing in docs/development.md. A module may import its own package
and anything on a lower floor; an arrow sideways or up fails here with its file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

#: Floor of each unit of ``harness`` (a top-level module or a subpackage).
FLOORS = {
    "errors": 0,
    "run": 1,
    "files": 1,
    "timing": 1,
    "records": 1,
    "passphrase": 2,
    "config": 2,
    "verdict": 2,
    "cli": 2,
    "program": 3,  # ./inv: Invoke's program around harness.cli's entry
    "host": 3,
    "upstream": 3,
    "firmware": 3,
    "sev": 4,
    "guest": 4,
    "inspection": 5,
    "components": 6,
    "boots": 7,
    "flows": 8,
    "__main__": 9,  # python -m harness: the program
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "harness").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The harness modules *path* imports, at any depth (a function's lazy import too)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name in modules:
                targets.add(name)
    return targets


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def arrows() -> set[tuple[str, str]]:
    modules = _modules()
    return {
        (name, target)
        for name, path in modules.items()
        for target in _imports(path, modules)
        if target != name and _unit(target) and target != "harness"
    }


def test_every_unit_has_a_floor() -> None:
    units = {_unit(m) for m in _modules()} - {""}
    assert units <= FLOORS.keys(), f"give these a floor: {sorted(units - FLOORS.keys())}"


def test_arrows_point_down() -> None:
    wrong = sorted(
        f"{src} -> {dst}"
        for src, dst in arrows()
        if _unit(src) != _unit(dst) and FLOORS[_unit(dst)] >= FLOORS[_unit(src)]
    )
    assert not wrong, "imports sideways or up:\n" + "\n".join(wrong)


def test_no_module_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst in arrows():
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_broken_layer_is_seen(tmp_path: Path) -> None:
    """The checker itself: an upward import in a scratch module is an arrow it reports."""
    scratch = tmp_path / "mod.py"
    scratch.write_text("from harness.flows import nightly\n")
    modules = _modules()
    assert _imports(scratch, modules) == {"harness.flows.nightly", "harness.flows"}


def _outside(path: Path) -> set[str]:
    """The top-level packages and modules *path* imports (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found


def test_the_floors_above_the_package() -> None:
    """tasks.py (the CLI) and tools/ (benchmarks, CI's figures) stand on the package:
    they may import any of it; it imports neither, and tools/ does not import the CLI."""
    below = {
        "tasks": ROOT / "tasks.py",
        **{f"tools.{p.stem}": p for p in (ROOT / "tools").glob("*.py")},
    }
    for name, path in _modules().items():
        wrong = _outside(path) & {"tasks", "tools"}
        assert not wrong, f"{name} imports {sorted(wrong)}: the package stands below them"
    for name, path in below.items():
        if name.startswith("tools."):
            assert "tasks" not in _outside(path), f"{name} imports the CLI (tasks.py)"
