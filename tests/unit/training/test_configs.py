"""Hydra composition: every model x optimizer x scheduler builds; groups switch what they claim;
presets compose to the recipes they state; the Optuna search fits every model."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_lab.config import instantiate_group
from mnist_lab.errors import ConfigError
from mnist_lab.paths import CONFIG_DIR
from mnist_lab.training.checks import JOBLIB_LAUNCHER, _is_joblib_launcher, _multi_process
from mnist_lab.training.module import build_module
from tests.helpers import compose_cfg

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


def test_combinations_cover_every_optimizer_and_scheduler_option():
    """The 80 combinations below are the four model families crossed with every option the
    optimizer and scheduler groups ship: a new option is not left out silently."""
    options = {
        group: {p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml")}
        for group in ("model", "optimizer", "scheduler")
    }
    assert set(MODELS) <= options["model"]
    assert options["optimizer"] == set(OPTIMIZERS)
    assert options["scheduler"] == set(SCHEDULERS)


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
    if scheduler == "plateau":  # patience 1: two epochs cannot cut the lr; it watches val/acc
        assert lr == cfg.optimizer.lr
        best = trainer.lr_scheduler_configs[0].scheduler.best
        assert best == pytest.approx(float(trainer.callback_metrics["val/acc_best"]))
    else:
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


def test_augmentation_off_from_the_command_line(tmp_path):
    """One way: the `none` option of the data/augment group."""
    assert instantiate(compose_cfg(["data/augment=none"], tmp_path).data).augment is None


def test_scheduler_keys_are_flat(tmp_path):
    """The scheduler's own arguments and Lightning's interval/monitor sit side by side; only
    the former reach the torch scheduler."""
    overrides = ["scheduler=onecycle", "scheduler.pct_start=0.12", "scheduler.interval=epoch"]
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.scheduler.pct_start == 0.12 and "scheduler" not in cfg.scheduler
    module = build_module(cfg)
    assert not {"interval", "monitor"} & set(module.scheduler_spec.factory.keywords)
    sched = module.build_optimization(total_steps=100)["lr_scheduler"]
    assert type(sched["scheduler"]) is torch.optim.lr_scheduler.OneCycleLR
    assert sched["scheduler"]._schedule_phases[0]["end_step"] == pytest.approx(0.12 * 100 - 1)
    assert sched["interval"] == "epoch" and "monitor" not in sched

    cfg = compose_cfg(["scheduler=plateau", "scheduler.monitor=val/loss", "scheduler.mode=min"])
    sched = build_module(cfg).build_optimization(total_steps=10)["lr_scheduler"]
    assert sched["monitor"] == "val/loss" and sched["scheduler"].mode == "min"

    assert compose_cfg(["scheduler=none"], tmp_path).scheduler is None
    with pytest.raises(ConfigError, match="scheduler=none takes no scheduler"):
        build_module(compose_cfg(["experiment=fast", "scheduler=none"], tmp_path))


def test_ema_is_one_callbacks_option(tmp_path):
    cfg = compose_cfg(["callbacks=ema"], tmp_path)
    assert cfg.callbacks.ema.decay == 0.999
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks)}
    assert {"EMAWeightAveraging", "ModelCheckpoint", "LearningRateMonitor"} <= names
    cfg = compose_cfg(["experiment=cnn", "callbacks=[early_stopping,ema]"], tmp_path)
    assert {"model_checkpoint", "early_stopping", "ema"} <= set(cfg.callbacks)


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path))
    cfg = compose_cfg([], tmp_path)
    assert cfg.data.data_dir == str(tmp_path)
    monkeypatch.delenv("MNIST_DATA_DIR")
    assert compose_cfg([], tmp_path).data.data_dir.endswith("/data")


PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
# What each preset trains: model class, batch size, lr, label smoothing, epochs, OneCycle
# warm-up share, EMA of the weights. All use Nesterov SGD and OneCycle; all but the baseline
# skip the sanity validation (the shared recipe, conf/recipe/tuned.yaml).
PRESET_RECIPES = {
    "lenet_baseline": ("LeNet5", 64, 0.05, 0.0, 10, 0.25, False),
    "mlp": ("MLP", 128, 0.05, 0.1, 30, 0.25, False),
    "cnn": ("CNN", 128, 0.1, 0.1, 15, 0.25, True),
    "resnet": ("ResNet", 128, 0.1, 0.1, 20, 0.25, True),
    "best": ("CNN", 128, 0.1, 0.1, 50, 0.25, True),
    "distilled": ("CNN", 128, 0.1, 0.1, 50, 0.25, True),
    "fast": ("CNN", 96, 0.085, 0.1, 4, 0.12, False),
    "robust": ("CNN", 96, 0.085, 0.1, 6, 0.12, False),
}


def test_the_issue_presets_exist():
    assert {"lenet_baseline", "mlp", "cnn", "resnet", "fast", "best"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds(preset, tmp_path, request):
    extra = []
    if preset == "distilled":  # its teacher: real checkpoints (by default the best preset's)
        runs = request.getfixturevalue("trained_runs")
        extra = [f"module.teacher.ckpts=[{runs[0]},{runs[1]}]"]
    cfg = compose_cfg([f"experiment={preset}", *extra], tmp_path)
    module = build_module(cfg)
    if preset == "distilled":
        assert len(module.teachers[0].nets) == 2 and module.hparams["distill_weight"] > 0
    assert module(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert module.build_optimization(total_steps=10)["optimizer"]
    names = {type(c).__name__ for c in instantiate_group(cfg.callbacks)}
    assert "ModelCheckpoint" in names
    assert cfg.trainer.max_epochs >= 1


# Beyond convolutions: model class, batch, peak lr, weight decay, epochs, warm-up share. All
# AdamW + OneCycle (warm-up, then cosine), label smoothing 0.1, gradient clipping at 1; EMA
# for vit and rnn.
ADAMW_RECIPES = {
    "vit": ("ViT", 256, 2e-3, 0.05, 20, 0.1),
    "rnn": ("RNN", 128, 3e-3, 0.01, 15, 0.15),
    "smnist": ("RNN", 256, 2e-3, 0.01, 1, 0.15),  # rnn's recipe on 784 single pixels, a budget
    "psmnist": ("RNN", 256, 2e-3, 0.01, 1, 0.15),
}


def test_every_preset_states_its_recipe():
    assert set(PRESET_RECIPES) | set(ADAMW_RECIPES) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(ADAMW_RECIPES))
def test_vit_and_rnn_presets_compose_to_their_recipe(preset, tmp_path):
    model, batch, lr, decay, epochs, warmup = ADAMW_RECIPES[preset]
    cfg = compose_cfg([f"experiment={preset}"], tmp_path)
    assert cfg.model._target_ == f"mnist_lab.models.{model}"
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert (cfg.data.batch_size, cfg.optimizer.lr, cfg.optimizer.weight_decay) == (batch, lr, decay)
    assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.OneCycleLR"
    assert (cfg.scheduler.pct_start, cfg.trainer.max_epochs) == (warmup, epochs)
    assert cfg.module.label_smoothing == 0.1 and cfg.trainer.gradient_clip_val == 1.0
    # one epoch of smnist: an average over 215 steps would still be mostly the initial weights
    assert ("ema" in cfg.callbacks) is (preset in ("vit", "rnn"))
    if preset in ("vit", "rnn"):
        assert cfg.callbacks.ema._target_.endswith("EMAWeightAveraging")
    if preset in ("smnist", "psmnist"):  # the benchmarks: one LSTM, pixel by pixel, plain images
        assert cfg.model.sequence == {"smnist": "pixels", "psmnist": "permuted_pixels"}[preset]
        assert (cfg.model.bidirectional, cfg.model.readout, dict(cfg.data.augment)) == (
            False,
            "last",
            {},
        )


@pytest.mark.parametrize("preset", sorted(PRESET_RECIPES))
def test_presets_compose_to_their_recipe(preset, tmp_path):
    model, batch, lr, smoothing, epochs, warmup, ema = PRESET_RECIPES[preset]
    cfg = compose_cfg([f"experiment={preset}"], tmp_path)
    assert cfg.model._target_.rsplit(".", 1)[-1] == model
    assert (cfg.data.batch_size, cfg.optimizer.lr, cfg.module.label_smoothing) == (
        batch,
        lr,
        smoothing,
    )
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.nesterov
    assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.OneCycleLR"
    assert (cfg.scheduler.pct_start, cfg.scheduler.interval) == (warmup, "step")
    assert cfg.trainer.max_epochs == epochs
    assert cfg.trainer.get("num_sanity_val_steps") == (None if preset == "lenet_baseline" else 0)
    assert ("ema" in cfg.callbacks) == ema
    if ema:
        assert cfg.callbacks.ema._target_.endswith("EMAWeightAveraging")
    if preset in ("fast", "robust"):
        assert (cfg.model.widths, cfg.model.convs_per_stage) == ([32, 64, 128], 1)
    if preset == "best":
        assert (cfg.model.widths, cfg.model.global_pool) == ([32, 64, 128], False)


def _compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


MODEL_OPTIONS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
_ABSENT = object()


@pytest.mark.parametrize("model", MODEL_OPTIONS)
def test_optuna_searches_only_keys_the_model_has(model):
    cfg = _compose_with_hydra(["hparams_search=optuna", f"model={model}"])
    params = list(cfg.hydra.sweeper.params)
    assert params[:4] == ["optimizer", "optimizer.lr", "optimizer.weight_decay", "data.batch_size"]
    missing = [k for k in params if OmegaConf.select(cfg, k, default=_ABSENT) is _ABSENT]
    assert not missing, f"hparams_search=optuna model={model} searches absent keys {missing}"


def test_optuna_searches_the_cnn_by_default():
    cfg = _compose_with_hydra(["hparams_search=optuna"])
    assert cfg.model._target_ == "mnist_lab.models.CNN"
    assert list(cfg.hydra.sweeper.params)[4:] == ["model.width_multiplier"]
    # without a search, no sweeper parameters: a plain multirun sweeps only what it is given
    assert not _compose_with_hydra(["model=cnn"]).hydra.sweeper.get("params")


def test_joblib_and_strategies_are_matched_by_class():
    assert _is_joblib_launcher(JOBLIB_LAUNCHER)
    assert not _is_joblib_launcher("hydra._internal.core_plugins.basic_launcher.BasicLauncher")
    assert not _is_joblib_launcher(None)
    ddp_class = {"_target_": "lightning.pytorch.strategies.DDPStrategy"}
    for trainer, many in [
        ({"devices": 2, "strategy": "ddp"}, True),
        ({"devices": 2, "strategy": "ddp_spawn"}, True),
        ({"devices": 2, "strategy": "fsdp"}, True),
        ({"devices": 2, "strategy": "auto"}, True),
        ({"devices": 1, "num_nodes": 2, "strategy": "ddp"}, True),
        ({"devices": 2, "strategy": ddp_class}, True),
        ({"devices": 1, "strategy": "ddp"}, False),
        ({"devices": 2, "strategy": "single_device"}, False),
        ({"devices": 2, "strategy": "not_a_strategy_but_has_ddp_in_it"}, False),
    ]:
        assert _multi_process(OmegaConf.create(trainer)) is many, trainer


# Where conf/trainer/default.yaml departs from Lightning's defaults, and why (its comments).
TRAINER_DEPARTURES = {
    "default_root_dir",  # the run directory
    "devices",  # 1 process unless trainer=ddp/ddp_cpu
    "precision",  # auto: from the hardware
    "max_epochs",
    "min_epochs",
    "log_every_n_steps",  # 50: logging every step costs more than a small model's step
    "enable_progress_bar",  # only at a terminal
    "deterministic",  # false rather than None: the same, stated
}


def test_every_trainer_argument_is_a_key_with_lightnings_default():
    """`trainer.<any argument>=` works without a `+`; a Lightning upgrade that adds an argument
    fails here until conf/trainer/default.yaml lists it."""
    import inspect

    params = dict(inspect.signature(L.Trainer.__init__).parameters)
    for own_group in ("self", "logger", "callbacks"):
        params.pop(own_group)
    listed = OmegaConf.load(Path(CONFIG_DIR) / "trainer" / "default.yaml")
    assert set(listed) - {"_target_"} == set(params)
    for name, param in params.items():
        if name not in TRAINER_DEPARTURES:
            assert listed[name] == param.default, name


def test_an_unknown_trainer_argument_is_refused_with_the_close_matches(tmp_path):
    from mnist_lab.training.checks import check_config

    cfg = compose_cfg(["+trainer.val_chek_interval=0.5", "+trainer.accelerater=cpu"], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert "trainer.val_chek_interval is not an argument" in str(err.value)
    assert "did you mean trainer.val_check_interval?" in str(err.value)
    assert "did you mean trainer.accelerator?" in str(err.value)
    cfg = compose_cfg(["trainer.accumulate_grad_batches=0"], tmp_path)
    with pytest.raises(ConfigError, match="accumulate_grad_batches=0"):
        check_config(cfg)
    cfg = compose_cfg(["experiment=robust", "module.consistency=1"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"data.augment.twins is off: set data.augment.twins=true"
    ):
        check_config(cfg)
    check_config(
        compose_cfg(
            ["experiment=robust", "module.consistency=1", "data.augment.twins=true"], tmp_path
        )
    )


def test_a_kept_run_is_stale_when_its_preset_sets_a_key_the_run_did_not_have():
    """``bench accuracy``/``zoo`` reuse: a key the code gained since a run is no change while the
    preset leaves it at its default, and a change when the preset sets it to something else."""
    from mnist_lab.training.kept_runs import config_changes

    def plain(overrides: list[str]) -> dict:
        return OmegaConf.to_container(compose_cfg(overrides), resolve=True)

    today, defaults = plain(["experiment=vit"]), plain([])
    old = plain(["experiment=vit"])
    del old["module"]["compile"]  # new since the run, left at its default by the preset
    assert config_changes(old, today, defaults) == []
    del old["module"]["label_smoothing"]  # new since the run, and the preset sets 0.1
    assert config_changes(old, today, defaults) == [
        "module.label_smoothing: <not in the run; default 0.0> -> 0.1"
    ]
    assert config_changes(old, today) == []  # without the defaults: the old behaviour
    old["module"]["label_smoothing"], old["optimizer"]["lr"] = 0.1, 1.0
    assert config_changes(old, today, defaults) == [
        f"optimizer.lr: 1.0 -> {today['optimizer']['lr']!r}"
    ]
