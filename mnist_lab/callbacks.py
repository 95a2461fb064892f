"""Callbacks that Lightning lacks in the form this project needs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import Logger
from matplotlib.figure import Figure
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mnist_lab.config import is_interactive
from mnist_lab.errors import NonFiniteLossError
from mnist_lab.figures import (
    close,
    confusion_matrix_figure,
    error_gallery_figure,
    image_grid_figure,
)
from mnist_lab.trackers import log_figure, shows_figures


def progress_bar() -> RichProgressBar | None:
    """A rich progress bar at a terminal; nothing in CI or when output goes to a file/pipe
    (the Trainer's ``enable_progress_bar`` follows the same rule through ``${interactive:}``)."""
    return RichProgressBar() if is_interactive() else None


def last_checkpoint(dirpath: str, every_n_train_steps: int = 0) -> ModelCheckpoint:
    """``last.ckpt`` after every epoch (and every N training steps when N > 0, so a crash
    mid-epoch loses < N steps): what ``ckpt_path=last`` resumes from.

    Lightning's own ``save_last`` refreshes ``last.ckpt`` only when the monitored metric
    improves, so without this a run killed after a few epochs without a new best would
    resume epochs behind.
    """
    if every_n_train_steps:
        return ModelCheckpoint(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
    # no monitor + top-1: one file, overwritten at every epoch end, named last.ckpt
    return ModelCheckpoint(
        dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )


class StopOnNonFinite(Callback):
    """Stop at the first NaN/inf loss or weight, naming the step and the fix.

    Runs before Lightning's ModelCheckpoint (which always goes last), so the newest checkpoint
    is the last good state. One fused norm over the weights per step (~0.1 ms here).
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # weights and float buffers (BatchNorm running stats overflow too)
        tensors = [p.detach() for p in pl_module.parameters()]
        tensors += [b for b in pl_module.buffers() if b.is_floating_point()]
        norms = torch.stack(torch._foreach_norm(tensors))
        loss_ok, weights_ok = bool(torch.isfinite(loss)), bool(torch.isfinite(norms).all())
        finite = loss_ok and weights_ok
        if trainer.world_size > 1:  # DDP: losses differ per rank; every rank must stop together
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        if not loss_ok:
            what = f"loss is {float(loss)}"
        elif weights_ok:
            what = "another DDP rank's loss is not finite"
        else:
            what = "the weights overflowed"
        lrs = ", ".join(f"{g['lr']:.3g}" for g in trainer.optimizers[0].param_groups)
        raise NonFiniteLossError(
            f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{batch_idx}): training diverged. Lower the learning rate (optimizer.lr; current "
            f"per-group lr {lrs}) or add warm-up (scheduler=onecycle). The checkpoints written "
            "before this step are kept."
        )


class RandomState(Callback):
    """Save and restore the global RNGs (dropout, any torch.rand in a model) in checkpoints.

    Lightning stores model, optimizer, scheduler, loop and loader state but not the random
    generators; without them a resumed run draws different dropout masks than the original.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None  # loaded state, applied at train start

    def state_dict(self) -> dict[str, Any]:
        # torch's generators only: they are tensors, so checkpoints stay weights_only-loadable
        # (the data order and augmentation use their own seeded generators anyway).
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Restored here, after model set-up and the sanity check have drawn numbers.
        state = self._pending
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._pending = None


def _figure_loggers(trainer: L.Trainer) -> list[Logger]:
    """The loggers that show images (TensorBoard, MLflow, W&B; not CSV), on rank 0 only."""
    return [lg for lg in trainer.loggers if shows_figures(lg)] if trainer.is_global_zero else []


class Figures(Callback):
    """Images for every logger that shows them (TensorBoard, MLflow, W&B): a grid of augmented
    training inputs when training starts, and the validation confusion matrix and
    most-confident-error gallery every ``every_n_epochs``.

    Under DDP each rank sees its shard of the validation set; rank 0's shard is drawn.
    """

    def __init__(self, every_n_epochs: int = 1, gallery_size: int = 32) -> None:
        self.every_n_epochs, self.gallery_size = every_n_epochs, gallery_size
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []

    def _log(self, trainer: L.Trainer, figures: dict[str, Figure]) -> None:
        for logger in _figure_loggers(trainer):
            for tag, figure in figures.items():
                log_figure(logger, tag, figure, trainer.global_step)
        close(*figures.values())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # mypy: Lightning's connectors set trainer.datamodule, an undeclared attribute
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        if not _figure_loggers(trainer) or not hasattr(datamodule, "transform"):
            return
        batch = next(iter(datamodule.train_dataloader()))
        x, y = datamodule.transform(batch, train=True)
        fig = image_grid_figure(x[:64], y[:64], "Augmented training inputs (label above)")
        self._log(trainer, {"train/augmented_inputs": fig})

    def _active(self, trainer: L.Trainer) -> bool:
        return (
            bool(_figure_loggers(trainer))
            and not trainer.sanity_checking
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._active(trainer) and isinstance(outputs, torch.Tensor):
            self._images.append(batch[0][:, 0].float().cpu())
            self._labels.append(batch[1].cpu())
            self._logits.append(outputs.float().cpu())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self._active(trainer) and self._logits):
            return
        probs = torch.cat(self._logits).softmax(-1)
        labels, images = torch.cat(self._labels), torch.cat(self._images)
        matrix = multiclass_confusion_matrix(probs, labels, num_classes=probs.shape[-1])
        gallery = error_gallery_figure(images, probs, labels, self.gallery_size)
        self._log(
            trainer,
            {"val/confusion_matrix": confusion_matrix_figure(matrix), "val/errors": gallery},
        )
        self._images, self._labels, self._logits = [], [], []
