"""The code base stays ruff-clean (lint and format), as configured in pyproject.toml."""

import shutil
import subprocess
import sys

from tests.helpers import ROOT


def test_ruff_lint_and_format():
    ruff = shutil.which("ruff") or f"{sys.prefix}/bin/ruff"
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean():
    """mypy, configured in pyproject.toml ([tool.mypy]: the mnist_lab package), finds nothing."""
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
