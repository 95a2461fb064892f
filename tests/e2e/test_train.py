"""The train command end to end, as a user runs it: real subprocesses, real MNIST, real files."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from mnist_lab.training.hardware import native_cpu_bf16, resolve_channels_last, resolve_precision
from tests.helpers import ROOT, read_metrics, run_module

METRIC_KEYS = {
    "test/acc",
    "test/loss",
    "val/acc_best",
    "params",
    "epochs",
    "train_seconds",
    "model",
    "optimizer",
    "scheduler",
    "seed",
    "best_ckpt",
    "precision",
    "channels_last",
    "machine",
}


def test_short_training_beats_chance_and_writes_its_run_dir(tmp_path):
    proc = run_module(
        "mnist_lab.train",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=150",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = read_metrics(tmp_path)
    assert set(metrics) >= METRIC_KEYS
    assert metrics["test/acc"] > 0.9, "150 batches of LeNet must beat chance (0.10) by far"
    assert metrics["val/acc_best"] > 0.9 and 0 < metrics["test/loss"] < 1
    assert (metrics["model"], metrics["optimizer"], metrics["scheduler"]) == (
        "lenet",
        "sgd",
        "onecycle",
    )
    assert metrics["params"] == 61_706 and metrics["epochs"] == 1 and metrics["seed"] == 42
    # `auto` precision/layout resolved for this machine, and the machine named
    assert metrics["precision"] == resolve_precision("auto", "auto")
    assert metrics["channels_last"] is resolve_channels_last("auto", metrics["precision"], "auto")
    assert metrics["machine"]["isa"] == torch.backends.cpu.get_cpu_capability()
    assert metrics["machine"]["native_bf16"] == native_cpu_bf16() and metrics["machine"]["cpu"]
    assert proc.stdout.strip().splitlines()[-1] == f"test/acc: {metrics['test/acc']:.4f}"
    # the tested checkpoint is the best one by val/acc, saved in the run's checkpoints/
    best = tmp_path / "checkpoints" / metrics["best_ckpt"].rsplit("/", 1)[-1]
    assert best.exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    run_config = ckpt["hyper_parameters"]["run_config"]
    assert run_config["model"]["_target_"] == "mnist_lab.models.LeNet5"
    assert run_config["trainer"]["precision"] == metrics["precision"]  # stored resolved, not auto
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow  # command subprocesses
def test_fast_dev_run_tests_final_weights(tmp_path):
    run_module("mnist_lab.train", "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}")
    metrics = read_metrics(tmp_path)
    assert metrics["best_ckpt"] is None and 0 <= metrics["test/acc"] <= 1


@pytest.mark.slow  # command subprocesses
def test_multirun_gives_every_job_its_own_directory(multirun_dir):
    jobs = sorted(p for p in multirun_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        metrics = read_metrics(job)
        seen.add((metrics["model"], metrics["optimizer"]))
        assert (job / "checkpoints" / "last.ckpt").exists()
        assert any((job / "tensorboard").glob("events.out.tfevents.*"))
    assert seen == {("mlp", "sgd"), ("mlp", "adam"), ("lenet", "sgd"), ("lenet", "adam")}


@pytest.mark.slow  # command subprocesses
def test_missing_data_is_one_clear_error(tmp_path):
    proc = run_module(
        "mnist_lab.train",
        f"data.data_dir={tmp_path}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode != 0
    assert "MNIST files missing" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # command subprocesses
def test_config_prints_and_lists_groups():
    out = run_module("mnist_lab.train", "--help").stdout
    for group in ("model: ", "optimizer: ", "scheduler: ", "trainer: ", "logger: ", "callbacks: "):
        assert group in out
    assert "resnet" in out and "onecycle" in out and "rmsprop" in out


@pytest.mark.slow
def test_make_train_reaches_98_percent(tmp_path):
    """Acceptance: `make train` trains the default model (LeNet-5) on all 55,000 images and
    prints a test accuracy >= 0.98, already after one epoch (`model=lenet
    trainer.max_epochs=1`, the first issue's bar; the default 5 epochs only add to it)."""
    # as a user types it: not a sub-make of `make test` (which would print "Leaving directory")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(
        ["make", "train", f"ARGS=trainer.max_epochs=1 hydra.run.dir={tmp_path}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test/acc: ") and float(last.split()[-1]) >= 0.98
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.98 and metrics["model"] == "lenet"
    assert metrics["global_steps"] == 55_000 // 64  # data.batch_size=64, last partial dropped
