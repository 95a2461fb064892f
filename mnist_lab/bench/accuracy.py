"""``bench accuracy``: test accuracy per preset over seeds, and the ensemble of the seeds.

Each (preset, seed) trains into its own folder under ``runs_dir`` and keeps its checkpoint, so
a benchmark of several hour-long runs can be split across sessions: a rerun reuses every run
that finished with the config it would train today and trains only the missing ones. The checkpoints
also stay available for ``python -m mnist_lab.ensemble`` and for mixed ensembles (``--mix``).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnist_lab.bench.timing import QUICK
from mnist_lab.data.files import load_split
from mnist_lab.errors import ConfigError
from mnist_lab.evaluation.ensemble import evaluate_ensemble, validation_split
from mnist_lab.training.kept_runs import DONE, run_seed, runs_root

__all__ = ["DONE", "bench_accuracy", "parse_mix", "run_seed"]


def _say(message: str) -> None:
    print(f"accuracy  {message}", flush=True)


def _ensemble(ckpts: list[str], quick: bool) -> dict[str, float]:
    """The ensemble on the test set, and on the validation images (``*_val``): whether TTA or a
    member helps can be read off validation, not chosen on the test set."""
    images, labels = load_split("test")
    if quick:  # the 2,000 images debug=tiny tests on (2 batches of 1,000)
        images, labels = images[:2000], labels[:2000]
    test = evaluate_ensemble(ckpts, images, labels, tta=True)
    val = evaluate_ensemble(ckpts, *validation_split(ckpts), tta=True, split="val")
    return {
        "ensemble": test["ensemble/acc"],
        "ensemble_tta": test["ensemble/acc_tta"],
        "ensemble_val": val["ensemble/acc"],
        "ensemble_tta_val": val["ensemble/acc_tta"],
    }


def parse_mix(specs: Sequence[str]) -> list[tuple[str, int]]:
    """``["best:0,1,2", "resnet:0"]`` -> [(best, 0), (best, 1), (best, 2), (resnet, 0)]."""
    members = []
    for spec in specs:
        preset, _, seeds = spec.partition(":")
        try:
            members += [(preset, int(s)) for s in seeds.split(",")]
        except ValueError:
            raise ConfigError(
                f"--mix {spec!r}: write PRESET:SEEDS with comma-separated seed numbers, "
                "e.g. --mix best:0,1,2 resnet:0,1"
            ) from None
    return members


def bench_accuracy(
    quick: bool,
    presets: list[str],
    seeds: int,
    runs_dir: Path | None = None,
    extra: Sequence[str] = (),
    fresh: bool = False,
    mix: Sequence[str] = (),
) -> dict[str, Any]:
    """Test accuracy per preset over seeds; the model is always chosen on validation accuracy.

    ``mix``: one more ensemble over runs of several presets (``PRESET:SEEDS`` each); its members
    are fixed by the command line before anything is tested, never picked on the test set.
    """
    extra = [*extra, *(QUICK if quick else [])]
    with tempfile.TemporaryDirectory() as tmp:
        root = runs_root(runs_dir, quick, tmp)
        table: dict[str, Any] = {}
        for preset in presets:
            runs = [run_seed(preset, seed, root, extra, fresh, _say) for seed in range(seeds)]
            accs = [r["test/acc"] for r in runs]
            secs = [r["train_seconds"] for r in runs]
            ckpts = [r["best_ckpt"] for r in runs]
            row: dict[str, Any] = {
                "seeds": seeds,
                "test_acc": accs,
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "train_seconds": secs,
                "train_seconds_median": statistics.median(secs),
                "epochs": runs[0]["epochs"],
                "precision": [r["precision"] for r in runs],
                "machines": sorted({r["machine"]["class"] for r in runs}),
                "reused": sum(bool(r.get("reused")) for r in runs),
            }
            if len(ckpts) > 1 and all(ckpts):
                row.update(_ensemble(ckpts, quick))
            table[preset] = row
        if mix:
            members = parse_mix(mix)
            runs = [run_seed(p, s, root, extra, say=_say) for p, s in members]
            table["mix"] = {
                "members": [f"{p}:{s}" for p, s in members],
                "test_acc": [r["test/acc"] for r in runs],
                **_ensemble([r["best_ckpt"] for r in runs], quick),
            }
    return table
