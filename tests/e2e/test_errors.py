"""`errors.entry_point`: the one place that turns a user's mistake into one line and exit 1."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from hydra.errors import CompactHydraException, InstantiationException

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


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["trainer.val_check_interval=1.5"], "trainer.val_check_interval=1.5"),  # Trainer()
        (["trainer.limit_val_batches=0.1"], "trainer.limit_val_batches=0.1"),  # fit's loop
    ],
)
def test_lightnings_refusal_of_a_trainer_setting_is_a_config_error(overrides, refused, tmp_path):
    """Lightning checks some arguments only when the Trainer is built or the loop starts; its
    MisconfigurationException / ValueError becomes the project's ConfigError naming the key."""
    from tests.helpers import train_in_process

    tiny = ["trainer.limit_train_batches=2", "logger=none", "callbacks.figures=null"]
    with pytest.raises(ConfigError, match=rf"Lightning refused {refused}: ") as err:
        train_in_process([*overrides, *tiny], tmp_path)
    assert isinstance(err.value, CompactHydraException)  # a sweep ends on it without traceback
    assert "\n" not in str(err.value)


def test_a_bug_inside_lightning_settings_is_not_taken_for_a_setting():
    from mnist_lab.errors import trainer_settings

    with pytest.raises(ZeroDivisionError), trainer_settings({"max_epochs": 1}):
        _ = 1 / 0
    with pytest.raises(ValueError, match="ours"), trainer_settings({"max_epochs": 1}):
        raise ValueError("ours, not Lightning's")  # raised outside Lightning's code
