"""Callbacks that Lightning lacks in the form this project needs."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar, WeightAveraging

from mnist_lab.config import is_interactive
from mnist_lab.inference import accuracy, predict_proba


def progress_bar() -> RichProgressBar | None:
    """A rich progress bar at a terminal; nothing in CI or when output goes to a file/pipe
    (the Trainer's ``enable_progress_bar`` follows the same rule through ``${interactive:}``)."""
    return RichProgressBar() if is_interactive() else None


class TimeToAccuracy(Callback):
    """Measures training wall time until *test* accuracy first reaches each target.

    Every ``every_n_steps`` optimizer steps (and at each epoch end) the current weights — the
    EMA weights when an ``EMAWeightAveraging`` callback runs — are evaluated on the test set.
    The clock is paused during these evaluations and during validation, so ``train_seconds``
    counts training only; evaluation time is reported apart. Stops the run once every target
    is reached if ``stop_at_targets``. A speed benchmark, never a model-selection tool.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        targets: tuple[float, ...] = (0.99, 0.995),
        every_n_steps: int = 50,
        stop_at_targets: bool = True,
    ) -> None:
        self.images, self.labels = images, labels
        self.targets, self.every_n_steps, self.stop = tuple(targets), every_n_steps, stop_at_targets
        self.reached: dict[float, dict[str, float]] = {}
        self.history: list[dict[str, float]] = []
        self.train_seconds = self.eval_seconds = 0.0
        self._since: float | None = None

    def _pause(self) -> None:
        if self._since is not None:
            self.train_seconds += time.perf_counter() - self._since
            self._since = None

    def _resume(self) -> None:
        self._since = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resume()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self._resume()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = batch_idx + 1 == trainer.num_training_batches
        if trainer.global_step % self.every_n_steps == 0 or last:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def _net(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.nn.Module:
        for cb in trainer.callbacks:
            average = getattr(cb, "_average_model", None)  # Lightning's WeightAveraging state
            if isinstance(cb, WeightAveraging) and average is not None and average.n_averaged > 0:
                return average.module.net
        return pl_module.net

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()
        start = time.perf_counter()
        net = self._net(trainer, pl_module)
        was_training = net.training
        probs = predict_proba(net, self.images, device=pl_module.device)
        net.train(was_training)
        acc = accuracy(probs, self.labels)
        self.eval_seconds += time.perf_counter() - start
        point = {"step": trainer.global_step, "train_seconds": self.train_seconds, "test/acc": acc}
        self.history.append(point)
        for target in self.targets:
            if target not in self.reached and acc >= target:
                self.reached[target] = point
        if self.stop and len(self.reached) == len(self.targets):
            trainer.should_stop = True
        self._resume()
