"""Shared fixtures. Tests run on the real MNIST files: ``$MNIST_DATA_DIR`` if set, else
``../shared/data`` (offline machines and CI) when present, else the project's ``data/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent / "shared" / "data"
os.environ.setdefault("MNIST_DATA_DIR", str(_shared if _shared.is_dir() else ROOT / "data"))
os.environ.setdefault("CI", "true")  # quiet progress bars in subprocesses
torch.set_num_threads(min(2, os.cpu_count() or 1))

from omegaconf import DictConfig  # noqa: E402

from mnist_lab.config import compose_train_config  # noqa: E402
from mnist_lab.data import MNISTDataModule  # noqa: E402

# Overrides that make a training run take seconds: a few batches, small evaluation.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def compose_cfg(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The train config as Hydra composes it, with ``paths.output_dir`` set outside a run."""
    return compose_train_config(overrides, output_dir or ROOT / "logs" / "test")


def run_module(
    module: str,
    *args: str,
    cwd: Path = ROOT,
    check: bool = True,
    timeout: int = 600,
    full_error: bool = True,
):
    """Run ``python -m module args`` in a real subprocess; returns the CompletedProcess.
    ``full_error=False`` shows what a user sees (Hydra's short error, no stack trace)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        | ({"HYDRA_FULL_ERROR": "1"} if full_error else {}),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def datamodule() -> MNISTDataModule:
    dm = MNISTDataModule()
    dm.setup()
    return dm


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> list[Path]:
    """Two short real LeNet runs (different seeds), each a run directory with checkpoints."""
    runs = []
    for seed in (0, 1):
        run_dir = tmp_path_factory.mktemp(f"run_seed{seed}")
        run_module(
            "mnist_lab.train",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=150",
            "logger=none",
            f"seed={seed}",
            f"hydra.run.dir={run_dir}",
        )
        runs.append(run_dir)
    return runs


@pytest.fixture(scope="session")
def tb_run(tmp_path_factory) -> Path:
    """A 2-epoch run with the default loggers and callbacks (TensorBoard, figures, checkpoints)."""
    run_dir = tmp_path_factory.mktemp("tb_run")
    run_module(
        "mnist_lab.train",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=10",
        f"hydra.run.dir={run_dir}",
    )
    return run_dir


@pytest.fixture(scope="session")
def multirun_dir(tmp_path_factory) -> Path:
    """The issue's 4-job sweep: model=mlp,lenet x optimizer=sgd,adam, a few batches each."""
    sweep = tmp_path_factory.mktemp("multirun")
    run_module(
        "mnist_lab.train",
        "-m",
        "model=mlp,lenet",
        "optimizer=sgd,adam",
        *TINY,
        "trainer.limit_train_batches=20",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    )
    return sweep


@pytest.fixture(scope="session")
def good_run(tmp_path_factory) -> Path:
    """One epoch of experiment=fast (~99 % test accuracy in ~10 s): a model worth deploying."""
    run_dir = tmp_path_factory.mktemp("good_run")
    run_module(
        "mnist_lab.train",
        "experiment=fast",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks.figures=null",
        f"hydra.run.dir={run_dir}",
    )
    return run_dir


@pytest.fixture(scope="session")
def onnx_export(good_run, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``good_run`` exported to ONNX (+ int8 dynamic quantisation): the file and the command."""
    out = tmp_path_factory.mktemp("export") / "digits.onnx"
    proc = run_module(
        "mnist_lab.export",
        f"ckpt_path={good_run}",
        "format=onnx",
        f"out={out}",
        "quantize=dynamic",
        f"hydra.run.dir={out.parent / 'run'}",
    )
    return out, proc
