"""`python -m mnist_lab.ensemble` on two real runs: members, TTA and the ensemble."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from mnist_lab.evaluation.inference import accuracy, predict_proba
from mnist_lab.training.checkpoint import load_net
from tests.helpers import read_metrics, run_module


class ShiftLabels(L.Callback):
    """Every training label + 1 (mod 10): what the net gets right did not come from them."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        batch[1].add_(1).remainder_(10)


@pytest.mark.slow  # the ensemble command
def test_ensemble_command_averages_probabilities(trained_runs, datamodule, tmp_path):
    proc = run_module(
        "mnist_lab.ensemble",
        f"ckpts=[{trained_runs[0]},{trained_runs[1]}]",
        "tta=true",
        f"hydra.run.dir={tmp_path}",
    )
    result = json.loads((tmp_path / "ensemble.json").read_text())
    assert result["n_models"] == 2
    for member, run in zip(result["members"], trained_runs, strict=True):
        assert member["test/acc"] == pytest.approx(read_metrics(run)["test/acc"], abs=1e-4)
    images, labels = datamodule.tensors["test"]
    nets = [load_net(read_metrics(r)["best_ckpt"])[0] for r in trained_runs]
    mean = (predict_proba(nets[0], images) + predict_proba(nets[1], images)) / 2
    assert result["ensemble/acc"] == pytest.approx(accuracy(mean, labels), abs=1e-6)
    tta = predict_proba(nets[0], images, tta=True)
    assert not torch.equal(tta.argmax(-1), predict_proba(nets[0], images).argmax(-1))
    assert result["members"][0]["test/acc_tta"] == pytest.approx(accuracy(tta, labels), abs=1e-6)
    assert proc.stdout.strip().splitlines()[-1].startswith("ensemble of 2 test/acc: ")
