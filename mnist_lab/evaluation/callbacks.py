"""The training-time view of the evaluation: figures drawn during validation, for every
logger that shows images (``callbacks.figures`` in conf/callbacks/default.yaml)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from matplotlib.figure import Figure
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mnist_lab.evaluation.figures import (
    close,
    confusion_matrix_figure,
    error_gallery_figure,
    image_grid_figure,
)
from mnist_lab.training.trackers import log_figure, shows_figures


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
        x, y = datamodule.transform(batch, train=True)[:2]
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
