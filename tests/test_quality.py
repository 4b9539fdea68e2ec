"""The static checks STYLE.md asks for run as tests: mypy --strict and ruff."""

from __future__ import annotations

import sys

import pytest

from harness import run
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_mypy_strict() -> None:
    proc = run.run([sys.executable, "-m", "mypy"], cwd=ROOT, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout.decode()


def test_ruff_lint() -> None:
    proc = run.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout.decode()


def test_ruff_format() -> None:
    proc = run.run([sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout.decode()
