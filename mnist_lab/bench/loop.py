"""``bench loop``: the Lightning loop vs a plain PyTorch loop over the same module and batches."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate

from mnist_lab.config import compose_train_config
from mnist_lab.data.datamodule import MNISTDataModule
from mnist_lab.training.hardware import resolve_auto
from mnist_lab.training.module import build_module


def bench_loop(quick: bool, preset: str = "fast") -> dict[str, Any]:
    """One epoch of the same net, optimizer, schedule and batches, Lightning vs a plain loop.

    Both run the module's own training step (forward, loss, torchmetrics accumulation), so the
    difference is the loop machinery: hooks, logging, optimizer closure, batch transfer.
    """
    repeats = 1 if quick else 5
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            "logger=none",
            "callbacks=none",
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=0",
        ]
        if quick:
            overrides.append("trainer.limit_train_batches=50")
        cfg = compose_train_config([f"experiment={preset}", *overrides], out)
        resolve_auto(cfg)  # the precision and layout `train` would use on this machine
        dm: MNISTDataModule = instantiate(cfg.data)
        dm.setup()
        limit = cfg.trainer.limit_train_batches
        n_batches = len(dm.train_dataloader()) if limit is None else int(limit)
        L.seed_everything(0, verbose=False)
        template = build_module(cfg)

        def plain() -> float:
            module = copy.deepcopy(template)
            opt = module.build_optimization(total_steps=n_batches)
            optimizer, sched = opt["optimizer"], opt.get("lr_scheduler", {}).get("scheduler")
            autocast = torch.autocast(
                "cpu", dtype=torch.bfloat16, enabled="bf16" in str(cfg.trainer.precision)
            )
            module.train()
            start = time.perf_counter()
            loader = dm.train_dataloader()
            for b, batch in enumerate(loader):
                if b == n_batches:
                    break
                x, y = dm.transform(batch, train=True)[:2]
                with autocast:  # the module's own step: forward, loss, metric accumulation
                    loss, _ = module.shared_step((x, y), "train")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if sched is not None:
                    sched.step()
            return time.perf_counter() - start

        class EpochClock(L.Callback):
            """The epoch itself: Trainer start-up (once per fit) is reported apart."""

            def on_train_epoch_start(
                self, trainer: L.Trainer, pl_module: L.LightningModule
            ) -> None:
                self.start = time.perf_counter()

            def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
                self.seconds = time.perf_counter() - self.start

        fit_seconds: list[float] = []

        def lightning() -> float:
            module = copy.deepcopy(template)
            clock = EpochClock()
            trainer = instantiate(
                cfg.trainer,
                callbacks=[clock],
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
            )
            start = time.perf_counter()
            trainer.fit(module, datamodule=dm)
            fit_seconds.append(time.perf_counter() - start)
            return clock.seconds

        times: dict[str, list[float]] = {"plain": [], "lightning": []}
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            times["plain"].append(plain())
            times["lightning"].append(lightning())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "preset": preset,
        "batches": n_batches,
        "plain_s_per_epoch": round(med["plain"], 3),
        "lightning_s_per_epoch": round(med["lightning"], 3),
        "ratio": round(med["lightning"] / med["plain"], 3),
        "lightning_fit_s": round(statistics.median(fit_seconds), 3),
        "note": "epoch time; lightning_fit_s adds Trainer start-up and teardown (once per run)",
        "runs": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }
