"""The one LightningModule: trains any ``nn.Module`` classifier with the optimizer and scheduler
that Hydra hands over as partials, so switching either is a config change, never a code change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
STAGES = ("train", "val", "test")


class Classifier(L.LightningModule):
    """Cross-entropy classification with torchmetrics accuracy per stage and ``val/acc_best``.

    Args:
        net: the plain model (``mnist_lab.models``), logits out.
        optimizer: a partial taking parameter groups, e.g. ``SGD(lr=0.05, momentum=0.9)``.
        scheduler: ``{"scheduler": partial taking the optimizer, "interval": "epoch"|"step",
            "monitor": metric or None}``, or None. A scheduler factory that accepts
            ``total_steps`` (OneCycleLR) and leaves it unset gets the Trainer's step count.
        label_smoothing: cross-entropy label smoothing (0 = off).
        decay_norm_and_bias: apply weight decay to BatchNorm and bias parameters too; off by
            default because decaying them only shrinks the scale the next layer undoes.
        channels_last: NHWC memory layout for net and inputs; with bf16 autocast it roughly
            doubles small-CNN training speed on a CPU (oneDNN's fast path).
        run_config: the run's resolved config, stored in the checkpoint to rebuild the model.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        decay_norm_and_bias: bool = False,
        num_classes: int = 10,
        channels_last: bool = False,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(memory_format=self.memory_format)
        self.optimizer_factory = optimizer
        self.scheduler_spec = dict(scheduler or {})
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        for stage in STAGES:
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes, average="micro"))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        acc = getattr(self, f"{stage}_acc")
        acc(logits, y)
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("train/acc", acc, on_step=True, on_epoch=True)
        else:
            # Metric objects (not per-step values) are logged: they sync across DDP ranks once
            # per epoch, so ranks may hold different numbers of evaluation batches.
            getattr(self, f"{stage}_loss")(loss, weight=y.numel())
            self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_epoch=True)
            self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=True)
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget what the sanity-check batches scored

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Weight-decayed weights and (unless ``decay_norm_and_bias``) undecayed 1-d params."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        if self.hparams.decay_norm_and_bias:
            return [{"params": params}]
        return [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]

    def build_optimization(self, total_steps: int) -> dict[str, Any]:
        """Optimizer and Lightning's lr-scheduler dict; ``total_steps`` feeds OneCycle."""
        optimizer = self.optimizer_factory(self.parameter_groups())
        factory = self.scheduler_spec.get("scheduler")
        if factory is None:
            return {"optimizer": optimizer}
        kwargs = {}
        bound = getattr(factory, "keywords", {})
        if "total_steps" in inspect.signature(factory).parameters and "total_steps" not in bound:
            kwargs["total_steps"] = int(total_steps)
        scheduler = factory(optimizer, **kwargs)
        config = {"scheduler": scheduler, "interval": self.scheduler_spec.get("interval", "epoch")}
        if self.scheduler_spec.get("monitor"):
            config["monitor"] = self.scheduler_spec["monitor"]
        return {"optimizer": optimizer, "lr_scheduler": config}

    def configure_optimizers(self) -> dict[str, Any]:
        return self.build_optimization(self.trainer.estimated_stepping_batches)
