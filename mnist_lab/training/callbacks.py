"""Callbacks that Lightning lacks in the form this project needs."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar

from mnist_lab.config import is_interactive
from mnist_lab.errors import NonFiniteLossError


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
