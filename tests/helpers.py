"""Test-only callbacks, injected into real training subprocesses with ``+callbacks.x=...``."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAt(L.Callback):
    """SIGKILL this process, like a crash or the OOM killer: no clean-up, no final save.

    ``step``: just before the training batch that would make ``global_step`` step + 1 (mid-
    epoch); ``epoch``: at the start of that epoch (between epochs, after the previous epoch's
    validation and checkpoint).
    """

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.step is not None and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.epoch is not None and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class Trace(L.Callback):
    """Append one line per training step: global step, batch index, a checksum of the
    (augmented) batch, the loss and a checksum of the weights: two runs compared step by step."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = sum(float(p.detach().double().sum()) for p in pl_module.parameters())
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        with open(self.path, "a") as f:
            x = float(batch[0].double().sum())  # after augmentation: order and augmentation
            f.write(f"{trainer.global_step} {batch_idx} {x:.6f} {loss:.8f} {total:.8f}\n")


class RecordSamples(L.Callback):
    """Write ``samples_rank<R>.txt``: one checksum per training image this DDP rank received
    (un-augmented runs only, so an image's checksum identifies it), to compare ranks' shards."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = batch[0].double().flatten(1)
        ids = [f"{float(v):.6f}" for v in (images * (1 + images.abs())).sum(1)]
        with open(os.path.join(self.out_dir, f"samples_rank{trainer.global_rank}.txt"), "a") as f:
            f.write("\n".join(ids) + "\n")
