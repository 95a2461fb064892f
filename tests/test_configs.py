"""Hydra composition: every model x optimizer x scheduler builds; groups switch what they claim."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from mnist_lab.config import CONFIG_DIR, instantiate_group
from mnist_lab.module import build_module
from tests.conftest import compose_cfg

MODELS = ["mlp", "lenet", "cnn", "resnet"]
OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
SCHEDULERS = {
    "none": None,
    "step": torch.optim.lr_scheduler.StepLR,
    "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
    "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
    "onecycle": torch.optim.lr_scheduler.OneCycleLR,
}
COMBOS = list(itertools.product(MODELS, OPTIMIZERS, SCHEDULERS))


def test_eighty_combinations():
    assert len(COMBOS) == 80


@pytest.mark.parametrize(("model", "optimizer", "scheduler"), COMBOS)
def test_every_combination_builds(model, optimizer, scheduler, tmp_path):
    cfg = compose_cfg(
        [f"model={model}", f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path
    )
    module = build_module(cfg)
    opt = module.build_optimization(total_steps=50)
    assert type(opt["optimizer"]) is OPTIMIZERS[optimizer]
    assert opt["optimizer"].defaults["lr"] == cfg.optimizer.lr
    if SCHEDULERS[scheduler] is None:
        assert "lr_scheduler" not in opt
    else:
        sched = opt["lr_scheduler"]
        assert type(sched["scheduler"]) is SCHEDULERS[scheduler]
        assert sched["interval"] == ("step" if scheduler == "onecycle" else "epoch")
        assert sched.get("monitor") == ("val/acc" if scheduler == "plateau" else None)
        if scheduler == "onecycle":
            assert sched["scheduler"].total_steps == 50
    # one real optimisation step changes the weights and gives a finite loss
    before = [p.detach().clone() for p in module.net.parameters()]
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = module.criterion(module(x), y)
    loss.backward()
    opt["optimizer"].step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.net.parameters(), strict=True))


def test_weight_decay_skips_norm_and_bias_by_default(tmp_path):
    module = build_module(compose_cfg(["model=cnn", "optimizer=sgd"], tmp_path))
    groups = module.build_optimization(10)["optimizer"].param_groups
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in groups[0]["params"])
    assert all(p.ndim == 1 for p in groups[1]["params"])
    module = build_module(compose_cfg(["model=cnn", "module.decay_norm_and_bias=true"], tmp_path))
    assert len(module.build_optimization(10)["optimizer"].param_groups) == 1


@pytest.mark.parametrize(
    ("model", "optimizer", "scheduler"),
    [("mlp", "adam", "plateau"), ("cnn", "rmsprop", "step"), ("resnet", "adamw", "cosine")],
)
def test_a_few_combinations_train_for_real(model, optimizer, scheduler, tmp_path):
    """A real Trainer.fit on real batches; the scheduler really moves the learning rate."""
    cfg = compose_cfg(
        [f"model={model}", f"optimizer={optimizer}", f"scheduler={scheduler}", "logger=none"],
        tmp_path,
    )
    L.seed_everything(0)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 8
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert 0 <= float(trainer.callback_metrics["val/acc_best"]) <= 1
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    if scheduler in ("step", "cosine"):
        assert lr < cfg.optimizer.lr


def test_group_options(tmp_path):
    cfg = compose_cfg(["logger=none"], tmp_path)
    assert cfg.logger is None and cfg.callbacks.lr_monitor is None
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks)}
    assert "LearningRateMonitor" not in names and "ModelCheckpoint" in names

    cfg = compose_cfg(["callbacks=early_stopping"], tmp_path)
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks)}
    assert {"EarlyStopping", "ModelCheckpoint", "LearningRateMonitor"} <= names
    assert instantiate_group(compose_cfg(["callbacks=none"], tmp_path).callbacks) == []

    loggers = instantiate_group(compose_cfg(["logger=csv"], tmp_path).logger)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger"]

    for trainer, accelerator in [("cpu", "cpu"), ("gpu", "gpu"), ("ddp", "gpu")]:
        assert compose_cfg([f"trainer={trainer}"], tmp_path).trainer.accelerator == accelerator
    assert compose_cfg(["trainer=ddp"], tmp_path).trainer.strategy == "ddp"
    cfg = compose_cfg(["trainer.precision=bf16-mixed", "trainer.deterministic=true"], tmp_path)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.deterministic is True


@pytest.mark.parametrize(
    "override", ["data.augment=none", "data/augment=none", "data.augment=null"]
)
def test_augmentation_off_from_the_command_line(override, tmp_path):
    assert instantiate(compose_cfg([override], tmp_path).data).augment is None


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path))
    cfg = compose_cfg([], tmp_path)
    assert cfg.data.data_dir == str(tmp_path)
    monkeypatch.delenv("MNIST_DATA_DIR")
    assert compose_cfg([], tmp_path).data.data_dir.endswith("/data")


PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def test_the_issue_presets_exist():
    assert {"lenet_baseline", "mlp", "cnn", "resnet", "fast", "best"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds(preset, tmp_path):
    cfg = compose_cfg([f"experiment={preset}"], tmp_path)
    module = build_module(cfg)
    assert module(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert module.build_optimization(total_steps=10)["optimizer"]
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks)}
    assert "ModelCheckpoint" in names
    assert cfg.trainer.max_epochs >= 1
