"""Habits: ruff-clean (lint and format) and mypy-clean as configured in pyproject.toml, and the
Makefile targets a newcomer runs."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def test_ruff_lint_and_format():
    ruff = shutil.which("ruff") or f"{sys.prefix}/bin/ruff"
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow  # ~17 s cold
def test_mypy_clean():
    """mypy, configured in pyproject.toml ([tool.mypy]: the mnist_lab package), finds nothing."""
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _make(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_make_help_lists_the_targets():
    out = _make("help")
    for target in ("install", "train", "test", "test-fast", "lint", "format", "clean"):
        assert re.search(rf"^  make {re.escape(target)}\s+\S", out, re.M), out


@pytest.mark.slow  # a pytest collection
def test_make_test_fast_runs_the_unit_tests_by_layer():
    """`make test-fast` is pytest on tests/unit: one folder per layer of mnist_lab/, tests that
    run in-process; commands started as processes live in tests/e2e (`make test` runs both)."""
    assert "pytest tests/unit" in _make("-n", "test-fast")
    assert "chromium" in _make("-n", "test")  # `make test` installs the page test's browser
    assert "lint-imports" in _make("-n", "lint")  # the layers contract is part of lint

    unit = ROOT / "tests" / "unit"
    layers = {p.name for p in (ROOT / "mnist_lab").iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in unit.iterdir() if (p / "__init__.py").is_file()}
    assert folders == layers - {"tools", "bench"} | {"core"}, folders
    starters = ("run_module(", "start_module(", "running_server(")
    for path in unit.rglob("test_*.py"):
        assert not any(s in path.read_text() for s in starters), f"{path}: an e2e test"
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run([*cmd, "tests/unit"], cwd=ROOT, capture_output=True, text=True)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert len(ids) > 150 and all(i.startswith("tests/unit/") for i in ids), proc.stdout[-2000:]
