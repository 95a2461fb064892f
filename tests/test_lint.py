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
def test_make_test_fast_runs_the_tests_not_marked_slow():
    """`make test-fast` is pytest -m "not slow"; that set leaves out the slow tests and keeps the
    rest (the fast loop exists, and its split is the marker, not a separate list)."""
    assert '-m "not slow"' in _make("-n", "test-fast")
    assert "chromium" in _make("-n", "test")  # `make test` installs the page test's browser

    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    files = ["tests/test_scale.py", "tests/test_data.py", "tests/test_train.py"]
    proc = subprocess.run(
        [*cmd, *files, "-m", "not slow"], cwd=ROOT, capture_output=True, text=True
    )
    fast = {line for line in proc.stdout.splitlines() if "::" in line}
    deselected = int(re.search(r"(\d+) deselected", proc.stdout).group(1))
    assert fast and deselected > 0, proc.stdout  # some tests run, the slow ones do not
    assert not any("test_scale.py" in t for t in fast)  # DDP: slow
    assert any("test_data.py" in t for t in fast) and any("test_train.py" in t for t in fast)
