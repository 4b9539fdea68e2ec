"""The ``./inv`` program: Invoke's, with usage errors that keep the CLI's promise.

The README promises one sentence and exit 2 for bad input. Invoke's own parser breaks
that promise in four ways: its errors exit 1 (our code for "verification failed"); a
misspelled option of a task that takes a positional argument is taken as that argument,
so the error blames the next word; an option without a default that is left out reaches
the task as a missing argument (a traceback); and a value its type cannot hold (``--jobs
x``) is a ``ValueError`` (another traceback). Here:

- every usage error is one sentence naming the option or task, with where to find help,
  and exit 2 (:data:`USAGE`);
- a task's option without a default is required, and is checked before the task runs;
- numbers are parsed once, by the parser, with the option's name in the error;
- ``--help TASK`` shows every value-taking option with its placeholder and says which
  are required, and no option gets a short flag that is not a letter, or ``-h``.

Tasks are declared with :func:`command` (Invoke's ``task`` with :class:`HarnessTask`,
and :func:`harness.cli.entry` around the body).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from invoke import __version__ as invoke_version
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.program import Program
from invoke.tasks import Task, task

from harness.cli import entry

#: The exit status of a usage error (as for every other :class:`harness.errors.InputError`).
USAGE = 2
#: The program's name in messages and help.
BINARY = "./inv"
#: Placeholders by value kind, where a task names none for its option.
KIND_PLACEHOLDER = {str: "TEXT", int: "N", list: "VALUE"}


class HarnessTask(Task[Callable[..., Any]]):
    """Invoke's task, which also knows its options' placeholders.

    Args:
        placeholders: option name -> the word shown for its value in ``--help``
            (FILE, DIR, GUID:FILE, ...); others get :data:`KIND_PLACEHOLDER`'s.
        choices: option name -> what lists its values, called only when ``--help``
            shows them (the lists live in modules too slow to import on every run).
    """

    def __init__(
        self,
        body: Callable[..., Any],
        placeholders: Mapping[str, str] | None = None,
        choices: Mapping[str, Callable[[], list[str]]] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(body, **kw)
        params = inspect.signature(body).parameters
        self.placeholders = {k: v for k, v in (placeholders or {}).items() if k in params}
        self.choices = dict(choices or {})

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        # Invoke takes the first character of the name not yet taken as the short flag,
        # even '-' (vcpu-model got "--") and 'h' (which then is not --help).
        long, *short = opts["names"]
        opts["names"] = [long, *(s for s in short if s.isalpha() and s != "h")]
        return opts

    def required(self) -> list[str]:
        """The options without a default (positional arguments excluded): required."""
        params = list(inspect.signature(self.body).parameters.values())[1:]  # after the Context
        return [
            p.name
            for p in params
            if p.default is inspect.Parameter.empty and p.name not in self.positional
        ]


def command(**kwargs: Any) -> Callable[[Callable[..., Any]], HarnessTask]:
    """Declare a task: Invoke's ``@task(...)`` with :class:`HarnessTask`, its body
    wrapped in :func:`harness.cli.entry`. ``placeholders`` may name options the task
    does not have (a table shared by all tasks)."""

    def declare(body: Callable[..., Any]) -> HarnessTask:
        made: HarnessTask = task(klass=HarnessTask, **kwargs)(entry(body))
        return made

    return declare


class _Argument(Argument):
    """An Argument whose value, when its kind cannot hold it, is a usage error naming
    the option, and whose repr (what Invoke's messages show) is the flag."""

    #: The task whose option this is (None: a core option).
    task_name: str | None = None

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except ValueError:
            what = "a whole number" if self.kind is int else f"a {self.kind.__name__}"
            where = f" of {self.task_name}" if self.task_name else ""
            helps = HarnessProgram._help(self.task_name)
            raise ParseError(f"{_flag(self)}{where} takes {what}, not {value!r}; {helps}") from None

    def __repr__(self) -> str:
        return _flag(self)


def _flag(arg: Argument) -> str:
    name = str(arg.name).replace("_", "-")
    return f"-{name}" if len(name) == 1 else f"--{name}"


def _adopt(context: ParserContext) -> None:
    for arg in [*context.args.values(), *context.flags.values()]:
        arg.__class__ = _Argument
        arg.task_name = context.name


class HarnessProgram(Program):
    """Invoke's Program, where a usage error is one sentence and exit :data:`USAGE`."""

    def __init__(self) -> None:
        super().__init__(name="harness", binary=BINARY, version=invoke_version)

    # Each parsing step turns Invoke's ParseError into our sentence.
    def parse_core(self, argv: list[str] | None) -> None:
        with self._usage():
            super().parse_core(argv)
            config = self.args.config.value
            if config and not os.path.isfile(config):
                raise ParseError(f"--config {config}: no such file; see {BINARY} --help")

    def load_collection(self) -> None:
        try:
            super().load_collection()
        except Exit as err:  # Invoke's "Can't find any collection named ..." (exit 1)
            raise Exit(f"error: {str(err.message).rstrip('!.')}.", code=USAGE) from None

    def parse_collection(self) -> None:
        with self._usage():
            super().parse_collection()

    def parse_tasks(self) -> None:
        with self._usage():
            self._check_tokens()
            super().parse_tasks()
            for ctx in self.tasks:
                if any(a.value in ("--help", "-h") for a in ctx.positional_args):
                    self.args.help.value = ctx.name  # Invoke took it for the argument
            if self.args.help.value:  # help for a task: what it needs is not asked yet
                return
            for ctx in self.tasks:
                self._check_task(ctx)

    def parse_cleanup(self) -> None:
        with self._usage():
            super().parse_cleanup()

    @property
    def initial_context(self) -> ParserContext:
        context: ParserContext = super().initial_context
        _adopt(context)
        return context

    def _make_parser(self) -> Any:
        # Once: Invoke's tasks hand their options' help over to the first parser made.
        if getattr(self, "_parser", None) is None:
            self._parser = super()._make_parser()
            for context in self._parser.contexts.values():
                _adopt(context)
        return self._parser

    @contextmanager
    def _usage(self) -> Iterator[None]:
        try:
            yield
        except ParseError as err:
            raise Exit(f"error: {self._sentence(err).rstrip('.')}.", code=USAGE) from None

    def _check_task(self, ctx: ParserContext) -> None:
        """What Invoke lets through: a misspelled option taken as a positional argument,
        and a required option left out."""
        eaten = self._eaten_flag(ctx)
        if eaten:
            raise ParseError(self._no_such_option(str(ctx.name), eaten))
        found = self.collection[ctx.name]
        if isinstance(found, HarnessTask):
            for name in found.required():
                if ctx.args[name].value in (None, []):
                    raise ParseError(
                        f"{ctx.name} needs {_flag(ctx.args[name])} "
                        f"{_placeholder(found, ctx.args[name])}; {self._help(ctx.name)}."
                    )

    def _check_tokens(self) -> None:
        """What Invoke's parser gets wrong: ``--switch=value`` (split, the value taken
        for a task's name) and a repeatable option given no value (silently ignored)."""
        contexts = self._make_parser().contexts
        ctx = None
        tokens = list(self.core.unparsed)
        for n, token in enumerate(tokens):
            if token == "--":
                return
            if token in contexts and (ctx is None or token not in ctx.flags):
                ctx = contexts[token]
                continue
            if ctx is None or not token.startswith("--"):
                continue
            flag, eq, _ = token.partition("=")
            arg = ctx.flags.get(flag) or ctx.flags.get(ctx.inverse_flags.get(flag, ""))
            if arg is None:
                continue
            if eq and not arg.takes_value:
                raise ParseError(
                    f"{flag} of {ctx.name} is a switch and takes no value; {self._help(ctx.name)}"
                )
            following = tokens[n + 1] if n + 1 < len(tokens) else None
            if arg.kind is list and not eq and (following is None or following in ctx.flags):
                raise ParseError(f"{flag} of {ctx.name} needs a value; {self._help(ctx.name)}")

    @staticmethod
    def _eaten_flag(ctx: ParserContext | None) -> str | None:
        if ctx is None:
            return None
        for arg in ctx.positional_args:
            if isinstance(arg.value, str) and arg.value.startswith("-") and arg.value != "-":
                if arg.value in ("--help", "-h"):  # Invoke's own help, taken as the argument
                    continue
                return arg.value
        return None

    def _sentence(self, err: ParseError) -> str:
        """Invoke's message as one sentence naming what was wrong."""
        message = str(err)
        ctx = err.context
        task_name = ctx.name if ctx is not None and ctx.name else None
        eaten = self._eaten_flag(ctx)
        if eaten and task_name:
            return self._no_such_option(task_name, eaten)
        if m := re.fullmatch(r"No idea what '(.*)' is!", message):
            token = m.group(1)
            if token.startswith("-"):
                if task_name:
                    return self._no_such_option(task_name, token)
                return f"{BINARY} has no option {token!r}; {BINARY} --help lists them"
            return self._no_such_task(token)
        if m := re.fullmatch(
            r"'(.*)' did not receive required positional arguments: (.*)", message
        ):
            names = [n.strip("'").replace("_", "-").upper() for n in m.group(2).split(", ")]
            return f"{m.group(1)} needs {' and '.join(names)}; {self._help(m.group(1))}"
        if m := re.fullmatch(r"Flag (\S+) needed value and was not given one!", message):
            where = f" of {task_name}" if task_name else ""
            return f"{m.group(1)}{where} needs a value; {self._help(task_name)}"
        if m := re.fullmatch(r"Flag (\S+) doesn't take any value!", message):
            where = f" of {task_name}" if task_name else ""
            return f"{m.group(1)}{where} is a switch and takes no value; {self._help(task_name)}"
        return message.rstrip(".!") + (f"; {self._help(task_name)}" if task_name else "")

    def _no_such_option(self, task_name: str, token: str) -> str:
        flag = token.split("=", 1)[0]
        known = [f for f in self.parser.contexts[task_name].flags if f.startswith("--")]
        near = difflib.get_close_matches(flag, known, n=1)
        guess = f" (did you mean {near[0]}?)" if near else ""
        return f"{task_name} has no option {flag!r}{guess}; {self._help(task_name)}"

    def _no_such_task(self, token: str) -> str:
        near = difflib.get_close_matches(token, self.collection.task_names, n=1)
        guess = f" (did you mean {near[0]}?)" if near else ""
        return f"there is no task {token!r}{guess}; {BINARY} --list shows them"

    @staticmethod
    def _help(task_name: str | None) -> str:
        return f"see {BINARY} --help {task_name}" if task_name else f"see {BINARY} --help"

    def print_task_help(self, name: str) -> None:
        """Invoke's task help, with each value's placeholder and the required options."""
        ctx = self.parser.contexts[name]
        found = self.collection[name]
        required = set(found.required()) if isinstance(found, HarnessTask) else set()
        positional = [a.name.replace("_", "-").upper() for a in ctx.positional_args]
        print(f"Usage: {BINARY} {' '.join([name, *positional])} [--options]")
        print("")
        doc = inspect.getdoc(found)
        for line in (doc or "none").splitlines():
            print(self.leading_indent + line if line.strip() else "")
        print("")
        print("Options:")
        rows = []
        for arg in sorted(ctx.args.values(), key=lambda a: (not a.positional, a.name)):
            rows.append(self._help_row(found, arg, arg.name in required))
        if rows:
            self.print_columns(rows)
        else:
            print(self.leading_indent + "none")
            print("")

    def _help_row(self, found: object, arg: Argument, required: bool) -> tuple[str, str]:
        if arg.takes_value:
            value = _placeholder(found, arg)
            names = [
                f"-{n} {value}" if len(n) == 1 else f"--{n}={value}"
                for n in sorted(arg.names, key=len)
            ]
        elif arg.kind is bool and arg.default is True:
            names = [f"--[no-]{arg.names[0]}"]
        else:
            names = [f"-{n}" if len(n) == 1 else f"--{n}" for n in sorted(arg.names, key=len)]
        text = arg.help or ""
        choices = getattr(found, "choices", {}).get(arg.name)
        if choices is not None:
            text = f"{text}; one of: {', '.join(choices())}"
        if required:
            text = f"(required) {text}"
        if arg.kind is list:
            text = f"{text} (repeatable)" if "repeatable" not in text else text
        return ", ".join(names), text


def _placeholder(found: object, arg: Argument) -> str:
    given = getattr(found, "placeholders", {}).get(arg.name)
    return str(given or KIND_PLACEHOLDER.get(arg.kind, "VALUE"))


def main() -> None:
    """``./inv``'s entry point."""
    try:
        HarnessProgram().run(sys.argv)
    except BrokenPipeError:  # ./inv --help boot | head: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
