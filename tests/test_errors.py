"""`errors.entry_point`: the one place that turns a user's mistake into one line and exit 1."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from hydra.errors import InstantiationException

from mnist_lab.errors import (
    CheckpointError,
    ConfigError,
    ImageError,
    MNISTDataError,
    MnistLabError,
    NonFiniteLossError,
    entry_point,
)
from tests.helpers import ROOT


@pytest.mark.parametrize(
    "error", [ConfigError, MNISTDataError, CheckpointError, ImageError, NonFiniteLossError]
)
def test_a_user_error_is_one_logged_line_and_exit_1(error, caplog):
    @entry_point
    def main() -> None:
        raise error("data.batch_size=0 must be a positive number of images")

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert [r.getMessage() for r in caplog.records] == [
        "data.batch_size=0 must be a positive number of images"
    ]


def test_a_constructor_error_wrapped_by_hydra_is_unwrapped(caplog):
    @entry_point
    def main() -> None:
        try:
            raise ConfigError("data.val_size must be between 1 and 59999, got 0")
        except ConfigError as err:  # what hydra.utils.instantiate does with it
            raise InstantiationException("Error in call to target 'MNISTDataModule'") from err

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        main()
    assert caplog.records[-1].getMessage().startswith("data.val_size must be between")


def test_a_bug_keeps_its_traceback():
    @entry_point
    def main() -> None:
        raise KeyError("not a user error")

    with pytest.raises(KeyError):
        main()
    assert issubclass(ConfigError, MnistLabError) and not issubclass(KeyError, MnistLabError)


# train, predict, export and robustness are checked the same way in their own test files
COMMANDS = [
    ("mnist_lab.eval", ["ckpt_path=/nonexistent/run"], "no such file or directory"),
    ("mnist_lab.ensemble", ["ckpts=[/nonexistent]"], "no such file or directory"),
    ("mnist_lab.serve", ["ckpt_path=/nonexistent.onnx"], "ONNX model not found"),
    ("mnist_lab.train", ["data.val_size=0"], "data.val_size must be between"),  # via Hydra
]


@pytest.mark.slow  # a real process per command (started together: ~10 s in all)
def test_every_command_answers_bad_input_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module, *args, f"hydra.run.dir={tmp_path / module}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module, args, _ in COMMANDS
    ]
    for proc, (module, _, message) in zip(procs, COMMANDS, strict=True):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, f"{module}: {stderr[-2000:]}"
        assert message in stderr and "Traceback" not in stderr, f"{module}: {stderr[-2000:]}"
