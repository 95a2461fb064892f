"""The warm command processes the suite starts (tests/warm.py) behave as `python -m` does."""

from __future__ import annotations

import json
import os
import re
import signal
import time

from tests import warm
from tests.helpers import run_module, start_module


def _lines(text: str) -> list[str]:
    return [re.sub(r"^\[[^]]*\]", "", line) for line in text.splitlines()]  # no timestamps


def test_warm_and_cold_starts_of_a_command_say_the_same(tmp_path):
    args = ("trainer.precision=fp16", f"hydra.run.dir={tmp_path}")
    cold = run_module("mnist_lab.train", *args, check=False, full_error=False, cold=True)
    hot = run_module("mnist_lab.train", *args, check=False, full_error=False)
    assert cold.returncode == hot.returncode == 1
    assert _lines(cold.stderr) == _lines(hot.stderr) and cold.stdout == hot.stdout
    assert "is not a precision" in hot.stderr


PROBE = """import json, os, sys, time
print(json.dumps([os.getpid(), os.getcwd(), sys.argv[1:], "torch" in sys.modules]), flush=True)
time.sleep(60)
"""


def test_a_warm_process_is_its_own_process(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    proc = start_module("probe", "a", "b=1", log_dir=tmp_path / "logs", cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not (said := (tmp_path / "logs" / "stdout").read_text()):
        assert proc.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    pid, cwd, argv, torch_imported = json.loads(said)
    assert pid == proc.pid != os.getpid() and cwd == str(tmp_path) and argv == ["a", "b=1"]
    assert torch_imported  # before the probe imported anything: the warm part
    proc.kill()
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    # an import-time variable of a library changed: only a cold start can honour it
    assert warm.can_start_warm()
    warm_env = dict(warm._env)
    try:
        warm._env = {**warm_env, "ATEN_CPU_CAPABILITY": "avx2"}
        assert not warm.can_start_warm()
    finally:
        warm._env = warm_env
