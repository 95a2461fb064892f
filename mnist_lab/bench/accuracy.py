"""``bench accuracy``: test accuracy per preset over seeds, and the ensemble of the seeds."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from mnist_lab.bench.timing import QUICK
from mnist_lab.config import compose_train_config
from mnist_lab.ensemble import evaluate_ensemble
from mnist_lab.mnist_files import load_split
from mnist_lab.train import train


def bench_accuracy(quick: bool, presets: list[str], seeds: int) -> dict[str, Any]:
    """Test accuracy per preset over seeds; the model is always chosen on validation accuracy."""
    table = {}
    for preset in presets:
        accs, secs, ckpts = [], [], []
        with tempfile.TemporaryDirectory() as out:
            for seed in range(seeds):
                cfg = compose_train_config(
                    [f"experiment={preset}", f"seed={seed}", "logger=none"]
                    + (QUICK if quick else []),
                    Path(out) / str(seed),
                )
                metrics = train(cfg)
                accs.append(metrics["test/acc"])
                secs.append(metrics["train_seconds"])
                ckpts.append(metrics["best_ckpt"])
            row: dict[str, Any] = {
                "seeds": seeds,
                "test_acc": accs,
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "train_seconds_median": statistics.median(secs),
            }
            if len(ckpts) > 1 and all(ckpts):
                images, labels = load_split("test")
                if quick:  # the 2,000 images debug=tiny tests on (2 batches of 1,000)
                    images, labels = images[:2000], labels[:2000]
                both = evaluate_ensemble(ckpts, images, labels, tta=True)
                row["ensemble"], row["ensemble_tta"] = (
                    both["ensemble/acc"],
                    both["ensemble/acc_tta"],
                )
        table[preset] = row
    return table
