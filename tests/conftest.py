"""Shared fixtures. Tests run on the real MNIST files: ``$MNIST_DATA_DIR`` if set, else
``../shared/data`` (offline machines and CI) when present, else the project's ``data/``.

Training fixtures run ``train(cfg)`` in this process (``train_in_process``): the same code as
the command without a new interpreter per run. Subprocesses are kept for what only they can
show: the command line, Hydra's sweep directories, resuming after a kill, DDP.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent / "shared" / "data"
os.environ.setdefault("MNIST_DATA_DIR", str(_shared if _shared.is_dir() else ROOT / "data"))
os.environ.setdefault("CI", "true")  # quiet progress bars in subprocesses
torch.set_num_threads(min(2, os.cpu_count() or 1))

from mnist_lab.data.datamodule import MNISTDataModule  # noqa: E402
from tests.helpers import run_module, train_in_process  # noqa: E402


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
        overrides = ["trainer.max_epochs=1", "trainer.limit_train_batches=150", "logger=none"]
        train_in_process([*overrides, f"seed={seed}"], run_dir)
        runs.append(run_dir)
    return runs


@pytest.fixture(scope="session")
def tb_run(tmp_path_factory) -> Path:
    """A 2-epoch run with the default loggers and callbacks (TensorBoard, figures, checkpoints)."""
    run_dir = tmp_path_factory.mktemp("tb_run")
    train_in_process(
        [
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=40",
            "trainer.limit_val_batches=2",
            "trainer.log_every_n_steps=10",
        ],
        run_dir,
    )
    return run_dir


@pytest.fixture(scope="session")
def multirun_dir(tmp_path_factory) -> Path:
    """The issue's 4-job sweep: model=mlp,lenet x optimizer=sgd,adam, a few batches each (a
    real Hydra multirun: the sweep directory layout is what its users read), logged to
    TensorBoard, MLflow (its store in ``<sweep>_logs/mlflow``) and W&B (offline) at once."""
    sweep = tmp_path_factory.mktemp("multirun")
    run_module(
        "mnist_lab.train",
        "-m",
        "model=mlp,lenet",
        "optimizer=sgd,adam",
        "debug=tiny",
        "logger=[tensorboard,mlflow,wandb]",
        "trainer.log_every_n_steps=5",
        f"paths.log_dir={sweep}_logs",
        f"hydra.sweep.dir={sweep}",
    )
    return sweep


@pytest.fixture(scope="session")
def good_run(tmp_path_factory) -> Path:
    """experiment=fast with its OneCycle schedule squeezed into 300 batches: a model worth
    deploying (it reads >= 95 % of rendered phone photos, test_predict) in ~15 s."""
    run_dir = tmp_path_factory.mktemp("good_run")
    overrides = ["experiment=fast", "trainer.max_epochs=1", "trainer.limit_train_batches=300"]
    overrides += ["logger=none", "callbacks.figures=null"]
    train_in_process(overrides, run_dir)
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
