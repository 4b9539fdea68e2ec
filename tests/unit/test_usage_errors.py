"""Every task's usage errors: one sentence naming what was wrong, exit 2, no traceback.

The program is the real one (harness.program) on the real tasks.py; only its last
step, running the task, is replaced by a failure, so a case that parses by mistake
cannot run a build or a boot. Every task is walked with a misspelled option, a missing
one and a malformed one, where its options allow each.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.program import USAGE, HarnessProgram, HarnessTask

ROOT = Path(__file__).resolve().parents[2]


class _ParseOnly(HarnessProgram):
    def execute(self) -> None:
        raise AssertionError(f"{self.argv} parsed, and would have run")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        _ParseOnly().run(["inv", "--search-root", str(ROOT), *argv])
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


def _loaded() -> HarnessProgram:
    """The program with tasks.py loaded, as run() loads it, and nothing run."""
    program = HarnessProgram()
    program.create_config()
    program.parse_core(["inv", "--search-root", str(ROOT)])
    program.parse_collection()
    return program


def _tasks() -> dict[str, HarnessTask]:
    program = _loaded()
    found = {}
    for name in program.collection.task_names:
        task = program.collection[name]
        assert isinstance(task, HarnessTask), f"{name} is not declared with harness.program"
        found[name] = task
    return found


TASKS = _tasks()


def _options(name: str) -> dict[str, object]:
    """The task's Arguments by name (a parser built the way the program builds it)."""
    return dict(_loaded()._make_parser().contexts[name].args.items())


def _usage_error(code: int, err: str) -> str:
    assert code == USAGE, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), err
    return lines[0]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_misspelled_option_is_named(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The misspelled option is the one blamed, also where the task takes a positional
    argument (Invoke took the option for it and blamed the next word)."""
    args = _options(name)
    first = sorted(a for a, arg in args.items() if not arg.positional)[0]  # type: ignore[attr-defined]
    typo = f"--{first.replace('_', '-')}x"
    line = _usage_error(*_run([name, typo, "VALUE"], capsys)[::2])
    assert f"'{typo}'" in line and "did you mean" in line, line


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_missing_value_or_option_is_named(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What the task needs and was not given: its positional argument, a required
    option, or the value of an option given last."""
    task, args = TASKS[name], _options(name)
    positional = [a for a, arg in args.items() if arg.positional]  # type: ignore[attr-defined]
    required = task.required()
    if positional or required:
        line = _usage_error(*_run([name], capsys)[::2])
        wanted = positional[0].upper() if positional else f"--{required[0].replace('_', '-')}"
    else:
        valued = sorted(a for a, arg in args.items() if arg.takes_value)  # type: ignore[attr-defined]
        if not valued:
            assert name == "doctor", f"{name} has no option that takes a value"
            return
        wanted = f"--{valued[0].replace('_', '-')}"
        line = _usage_error(*_run([name, wanted], capsys)[::2])
    assert wanted.replace("_", "-") in line and name in line, line


#: Tasks whose options are all text: nothing the parser can call malformed (their values
#: are checked by the task, e.g. tests/integration/test_sev_cli.py).
TEXT_ONLY = {"patches.export", "patches.import", "patches.rebase", "sev.keys"}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_malformed_value_is_named(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A number that is not one, or a switch given a value."""
    args = _options(name)
    numbers = sorted(a for a, arg in args.items() if arg.kind is int)  # type: ignore[attr-defined]
    switches = sorted(a for a, arg in args.items() if arg.kind is bool)  # type: ignore[attr-defined]
    if not numbers and not switches:
        assert name in TEXT_ONLY
        return
    assert name not in TEXT_ONLY
    flag = f"--{(numbers or switches)[0].replace('_', '-')}"
    fill = [f"--{r.replace('_', '-')}=x" for r in TASKS[name].required()]
    given = f"{flag}=abc" if numbers else f"{flag}=yes"
    line = _usage_error(*_run([name, *fill, given], capsys)[::2])
    assert flag in line, line
    assert ("whole number" in line) if numbers else ("takes no value" in line), line


def test_no_such_task_and_no_such_core_option(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(*_run(["buld-ovmf"], capsys)[::2])
    assert "'buld-ovmf'" in line and "build-ovmf" in line
    line = _usage_error(*_run(["--frobnicate", "doctor"], capsys)[::2])
    assert "'--frobnicate'" in line
    line = _usage_error(*_run(["--help", "no-such-task"], capsys)[::2])
    assert "'no-such-task'" in line
    line = _usage_error(*_run(["-c", "no-such-collection", "doctor"], capsys)[::2])
    assert "'no-such-collection'" in line
    line = _usage_error(*_run(["-f", "/no/such/config.yaml", "doctor"], capsys)[::2])
    assert "/no/such/config.yaml" in line


def _help_rows(out: str) -> dict[str, str]:
    """--help's options: each row's flag spec -> its help text (wrapped lines joined)."""
    rows: dict[str, str] = {}
    spec = ""
    for line in out.split("Options:", 1)[1].splitlines():
        if line.startswith("  -"):
            spec, _, text = line.strip().partition("  ")
            rows[spec] = text.strip()
        elif spec and line.strip():
            rows[spec] += " " + line.strip()
    return rows


@pytest.mark.parametrize("name", sorted(TASKS))
def test_help_shows_every_option_with_its_value(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["--help", name], capsys)
    assert code == 0 and err == "", err
    rows = _help_rows(out)
    assert not any("--=" in spec for spec in rows)  # a short flag made of '-'
    for arg_name, arg in _options(name).items():
        long = arg_name.replace("_", "-")
        if len(long) == 1:  # -m, -k: a short flag alone
            flag, valued = f"-{long}", f"-{long} "
        else:
            flag, valued = f"--{long}", f"--{long}="
        spec = next(
            (
                s
                for s in rows
                if flag in s.replace("[no-]", "").split(", ")
                or any(p.startswith(valued) for p in s.split(", "))
            ),
            "",
        )
        assert spec, f"{flag} missing from the help of {name}: {sorted(rows)}"
        if arg.takes_value:  # type: ignore[attr-defined]
            assert valued in spec and not spec.endswith(("=", " ")), spec
        required = arg.name in TASKS[name].required()  # type: ignore[attr-defined]
        assert ("(required)" in rows[spec]) == required, spec
        assert "h" not in arg.names, f"-h of {name} would not be help"  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_help_after_the_task_is_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``./inv inspect --help``: Invoke took --help for inspect's firmware and ran it."""
    for flag in ("--help", "-h"):
        code, out, err = _run([name, flag], capsys)
        assert code == 0 and err == "" and out.startswith(f"Usage: ./inv {name}"), (out, err)


@pytest.mark.parametrize(
    ("name", "listed"),
    [("boot", "harness.boots.scenarios:SCENARIOS"), ("nightly", "harness.boots.matrix:MATRIX")],
)
def test_help_lists_what_a_scenario_or_case_may_be(
    name: str, listed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    module, attr = listed.split(":")
    catalogue = getattr(importlib.import_module(module), attr)
    from harness.boots.matrix import case_id

    names = list(catalogue) if isinstance(catalogue, dict) else [case_id(*c) for c in catalogue]
    code, out, _ = _run(["--help", name], capsys)
    flat = "".join(out.split())  # help wraps, also at hyphens
    assert code == 0 and names and all(n in flat for n in names)


def test_the_inv_script_runs_this_program() -> None:
    """./inv itself, as a user types it: the usage error and its exit status."""
    proc = subprocess.run(
        [str(ROOT / "inv"), "inspect", "--jsn", "FILE"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    line = _usage_error(proc.returncode, proc.stderr)
    assert "'--jsn'" in line and "--json" in line and proc.stdout == ""
