"""``train(cfg)``: what ``python -m mnist_lab.train`` runs, for every caller that trains
(the command, the benchmarks, kept preset runs, distillation teachers, notebooks).

Reads like lightning-hydra-template's ``train(cfg)``: check the config -> instantiate data ->
model -> callbacks -> loggers -> trainer, fit, test the checkpoint chosen on validation, write
``metrics.json``. Lightning (~4 s to import) is imported inside ``train``, so a config that is
refused answers without it.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_lab import runs
from mnist_lab.config import group_choice, instantiate_group
from mnist_lab.errors import (
    CheckpointError,
    MnistLabError,
    NonFiniteLossError,
    in_multirun,
    trainer_settings,
)
from mnist_lab.models import count_parameters
from mnist_lab.training.checkpoint import load_checkpoint
from mnist_lab.training.checks import prepare
from mnist_lab.training.distributed import in_sweep_child, report_rank_failure

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.loggers import Logger

    from mnist_lab.training.module import Classifier

log = logging.getLogger(__name__)


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Fit, test the best checkpoint (by ``val/acc``) and return/write the run's metrics.

    ``extra_callbacks`` lets other tools (the benchmark) observe a run without copying it.
    """
    import lightning as L

    from mnist_lab.training.module import build_module
    from mnist_lab.training.trackers import closing

    hardware = prepare(cfg)  # `auto` resolved for this machine (logged once), then checked
    Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)  # also outside Hydra (notebooks)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = instantiate_group(cfg.get("callbacks")) + list(extra_callbacks or [])
    loggers = instantiate_group(cfg.get("logger"))
    with trainer_settings(cfg.trainer):  # Lightning's refusal of a trainer.* value: one line
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    with closing(loggers):
        return _fit_and_test(cfg, trainer, module, datamodule, loggers, hardware)


def _fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: Classifier,
    datamodule: L.LightningDataModule,
    loggers: list[Logger],
    hardware: dict[str, Any],
) -> dict[str, Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mnist_lab.training.trackers import record_run, tracker_ref

    start = time.perf_counter()
    # weights_only: resuming never unpickles arbitrary objects (our checkpoints hold tensors,
    # numbers, strings and containers only).
    try:
        with trainer_settings(
            cfg.trainer
        ):  # Lightning checks some settings only as the loop starts
            trainer.fit(
                module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True
            )
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refusing to resume from {cfg.get('ckpt_path')}: it holds objects other than "
            f"tensors and plain data ({str(err).splitlines()[0]}). Only resume checkpoints "
            "you trust."
        ) from None
    train_seconds = time.perf_counter() - start
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    checkpoint = trainer.checkpoint_callback
    best_ckpt = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    # Test the checkpoint chosen on validation accuracy; the test set never picks a model.
    # Its weights are loaded here, not through trainer.test(ckpt_path=...): with an EMA
    # callback Lightning would then restore the raw weights ("current_model_state") rather
    # than the averaged ones that validation chose and that eval/export/serve use.
    if best_ckpt:
        module.load_state_dict(load_checkpoint(best_ckpt)["state_dict"])
    with trainer_settings(cfg.trainer):
        test_metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]

    metrics = {
        "test/acc": test_metrics["test/acc"],
        "test/loss": test_metrics["test/loss"],
        "val/acc_best": fit_metrics.get("val/acc_best"),
        "params": count_parameters(module.net),
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "world_size": trainer.world_size,  # processes that trained together (DDP)
        "train_seconds": round(train_seconds, 3),
        "model": group_choice(cfg, "model"),
        "optimizer": group_choice(cfg, "optimizer"),
        "scheduler": group_choice(cfg, "scheduler"),
        "seed": cfg.seed,
        "best_ckpt": best_ckpt or None,
        "precision": hardware["precision"],
        "channels_last": hardware["channels_last"],
        "machine": hardware["machine"],
    }
    # Every tracker gets the run's config as params and where its best checkpoint is
    # (mnist_lab/training/trackers.py: what each one needs beyond the metrics Lightning streamed).
    final = {
        k: metrics[k] for k in ("test/acc", "test/loss", "val/acc_best") if metrics[k] is not None
    }
    params = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # a DictConfig
    params["machine"] = hardware["machine"]  # the HPARAMS tab says where the run trained
    tags = {"best_ckpt": best_ckpt, "output_dir": str(Path(cfg.paths.output_dir).resolve())}
    if trainer.is_global_zero:
        for logger in loggers:
            record_run(logger, params, final, **tags)
        metrics["trackers"] = [ref for logger in loggers if (ref := tracker_ref(logger))]
        path = runs.write_metrics(cfg.paths.output_dir, "train", metrics)
        log.info("metrics written to %s", path)
    return metrics


def failed_run(err: MnistLabError, cfg: DictConfig) -> float | None:
    """What a failed run hands back: the sweep and DDP rules, in one place.

    - a DDP rank >= 1 of a sweep job leaves its error for rank 0 and returns None: a failing
      child would make Lightning kill the whole sweep (mnist_lab/training/distributed.py);
    - a diverged trial of a sweep is a result, not a broken sweep: the sweeper gets
      ``diverged_objective`` (the worst accuracy; Optuna goes on sampling), the summary gets
      ``error.txt`` (mnist_lab/runs.py);
    - anything else is re-raised: ``entry_point`` logs it and exits 1 (a single run), or Hydra
      marks the job failed (a sweep) and the sweep decides what follows.
    """
    if in_sweep_child():
        report_rank_failure(err, cfg.paths.output_dir)
        return None
    if isinstance(err, NonFiniteLossError) and in_multirun():
        log.error("%s", err)
        runs.write_error(cfg.paths.output_dir, str(err))
        return cfg.get("diverged_objective")
    raise err
