"""``bench robustness``: presets x seeds, clean and corruption-suite accuracy, train time ratio."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from mnist_lab.bench.timing import QUICK
from mnist_lab.config import compose_train_config
from mnist_lab.data.files import load_split
from mnist_lab.evaluation.loading import load_predictor
from mnist_lab.evaluation.robustness import run_suite
from mnist_lab.training.fit import train


def bench_robustness(quick: bool, presets: list[str], seeds: int) -> dict[str, Any]:
    """Each preset trained per seed (interleaved, so machine drift hits all alike), then the
    corruption suite on the test set: clean and mean-over-suite accuracy, train seconds, and
    each preset's train time relative to the first preset's, seed by seed."""
    images, labels = load_split("test")
    if quick:
        images, labels = images[:500], labels[:500]
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in presets}
    for seed in range(seeds):
        for preset in presets:
            with tempfile.TemporaryDirectory() as out:
                overrides = [f"experiment={preset}", f"seed={seed}", "logger=none"]
                cfg = compose_train_config(overrides + (QUICK if quick else []), out)
                metrics = train(cfg)
                suite = run_suite(
                    load_predictor(metrics["best_ckpt"]), images, labels, Path(out) / "robustness"
                )
            runs[preset].append(
                {
                    "seed": seed,
                    "test_acc": metrics["test/acc"],
                    "train_seconds": metrics["train_seconds"],
                    "precision": metrics["precision"],
                    "mean_corrupt_acc": suite["mean_corrupt_acc"],
                    "corruptions": suite["corruptions"],
                    "mean_cross_source_acc": suite["mean_cross_source_acc"],
                    "cross_source": suite["cross_source"],
                }
            )
    base = presets[0]
    table = {}
    for preset, rows in runs.items():
        names, cross = list(rows[0]["corruptions"]), list(rows[0]["cross_source"])
        table[preset] = {
            "seeds": seeds,
            "test_acc_mean": statistics.mean(r["test_acc"] for r in rows),
            "mean_corrupt_acc_mean": statistics.mean(r["mean_corrupt_acc"] for r in rows),
            "corruptions_mean": {
                n: round(statistics.mean(r["corruptions"][n] for r in rows), 5) for n in names
            },
            "mean_cross_source_acc_mean": statistics.mean(r["mean_cross_source_acc"] for r in rows),
            "cross_source_mean": {
                n: round(statistics.mean(r["cross_source"][n] for r in rows), 5) for n in cross
            },
            "train_seconds_median": statistics.median(r["train_seconds"] for r in rows),
            f"time_vs_{base}_median": round(
                statistics.median(
                    r["train_seconds"] / b["train_seconds"]
                    for r, b in zip(rows, runs[base], strict=True)
                ),
                3,
            ),
            "runs": rows,
        }
    return table
