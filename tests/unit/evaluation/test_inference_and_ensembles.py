"""Checkpoint loading, ensembling and test-time augmentation on real trained checkpoints."""

from __future__ import annotations

import os
import pickle

import lightning as L
import pytest
import torch

from mnist_lab.errors import CheckpointError
from mnist_lab.evaluation.inference import accuracy, predict_proba
from mnist_lab.training.checkpoint import load_checkpoint, load_net, resolve_checkpoints
from mnist_lab.training.module import Classifier, build_module
from tests.helpers import Pickled, compose_cfg, read_metrics


class ShiftLabels(L.Callback):
    """Every training label + 1 (mod 10): what the net gets right did not come from them."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        batch[1].add_(1).remainder_(10)


def test_loaded_net_reproduces_the_runs_test_accuracy(trained_runs, datamodule):
    images, labels = datamodule.tensors["test"]
    for run in trained_runs:
        metrics = read_metrics(run)
        net, config = load_net(metrics["best_ckpt"])
        assert config["seed"] == metrics["seed"]
        acc = accuracy(predict_proba(net, images), labels)
        assert acc == pytest.approx(metrics["test/acc"], abs=1e-4)


def test_run_and_multirun_directories_resolve_to_best_checkpoints(trained_runs):
    ckpts = resolve_checkpoints([str(r) for r in trained_runs])
    assert [str(c) for c in ckpts] == [read_metrics(r)["best_ckpt"] for r in trained_runs]
    with pytest.raises(CheckpointError, match="no such file or directory"):
        resolve_checkpoints(["/nonexistent/run"])
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a run directory"):
        resolve_checkpoints([str(trained_runs[0] / "checkpoints")])


def test_malicious_checkpoint_is_refused_not_executed(tmp_path):
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Pickled()}}, bad, pickle_module=pickle)
    marker = "/tmp/mnist_lab_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load_checkpoint(bad)
    assert not os.path.exists(marker)


def test_missing_or_foreign_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"not written by mnist_lab\.train"):
        load_net(foreign)


def test_ensemble_on_the_validation_split_reproduces_what_training_chose(trained_runs, tmp_path):
    """split=val rebuilds each run's held-out images from its own config: the member accuracy
    there is the val/acc_best the checkpoint was chosen by, so members and TTA can be chosen
    without the test set."""
    from omegaconf import OmegaConf

    from mnist_lab.errors import ConfigError
    from mnist_lab.evaluation.ensemble import ensemble

    ckpts = [read_metrics(r)["best_ckpt"] for r in trained_runs]
    cfg = OmegaConf.create(
        {"ckpts": ckpts, "split": "val", "tta": False, "data_dir": None, "batch_size": 1000}
    )
    cfg.device = "cpu"
    result = ensemble(cfg)
    assert result["split"] == "val" and len(result["members"]) == 2
    for member, run in zip(result["members"], trained_runs, strict=True):
        assert member["val/acc"] == pytest.approx(read_metrics(run)["val/acc_best"], abs=1e-4)
    other = torch.load(ckpts[1], weights_only=True)
    other["hyper_parameters"]["run_config"]["data"]["split_seed"] = 7
    torch.save(other, tmp_path / "other_split.ckpt")
    cfg.ckpts = [ckpts[0], str(tmp_path / "other_split.ckpt")]
    with pytest.raises(ConfigError, match="different validation images"):
        ensemble(cfg)
    cfg.split = "train"
    with pytest.raises(ConfigError, match="choose one of test, val"):
        ensemble(cfg)


def test_distillation_learns_the_teachers_digits_not_the_labels(trained_runs, tmp_path):
    """distill_weight=1 trains on the teacher's predictions alone: with every training label
    wrong, the student still learns the right digits, because the teacher knows them."""
    from mnist_lab.training.fit import train

    teacher = read_metrics(trained_runs[0])["best_ckpt"]
    overrides = [
        "model=lenet",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=100",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "logger=none",
        f"module.teacher={{_target_:mnist_lab.training.checkpoint.load_ensemble,ckpts:['{teacher}']}}",
        "module.distill_weight=1.0",
        "module.distill_temperature=1.0",
    ]
    metrics = train(compose_cfg(overrides, tmp_path), extra_callbacks=[ShiftLabels()])
    assert metrics["test/acc"] > 0.8  # learning the shifted labels would score ~0
    net, config = load_net(metrics["best_ckpt"])  # the teacher is not in the checkpoint
    state = torch.load(metrics["best_ckpt"], weights_only=True)["state_dict"]
    assert not any("teacher" in key for key in state)
    config["module"]["teacher"]["ckpts"] = ["/gone/teacher.ckpt"]  # teachers may be deleted
    assert build_module(config, net).teachers == ()  # evaluating never loads the teacher


def test_distillation_without_a_teacher_is_one_clear_error():
    from mnist_lab.errors import ConfigError
    from mnist_lab.models import LeNet5

    with pytest.raises(ConfigError, match=r"needs a teacher: set module\.teacher"):
        Classifier(LeNet5(), distill_weight=0.5)
    with pytest.raises(ConfigError, match="distill_temperature > 0"):
        Classifier(LeNet5(), distill_temperature=0.0)
