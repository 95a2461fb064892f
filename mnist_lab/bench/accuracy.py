"""``bench accuracy``: test accuracy per preset over seeds, and the ensemble of the seeds.

Each (preset, seed) trains into its own folder under ``runs_dir`` and keeps its checkpoint, so
a benchmark of several hour-long runs can be split across sessions: a rerun reuses every run
that finished with the config it would train today and trains only the missing ones. The checkpoints
also stay available for ``python -m mnist_lab.ensemble`` and for mixed ensembles (``--mix``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

from mnist_lab.bench.timing import QUICK
from mnist_lab.checkpoint import run_config
from mnist_lab.config import PROJECT_ROOT, compose_train_config
from mnist_lab.ensemble import evaluate_ensemble, validation_split
from mnist_lab.errors import ConfigError
from mnist_lab.hardware import AUTO
from mnist_lab.mnist_files import load_split
from mnist_lab.train import train

RUNS_DIR = PROJECT_ROOT / "logs" / "bench" / "accuracy"
DONE = "bench_run.json"  # written last: a folder without it is an unfinished run


# What only watches a run (loggers, figures, progress) cannot change its weights.
OBSERVERS = ("logger", "callbacks.figures", "callbacks.progress_bar", "callbacks.lr_monitor")


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved run config as dotted key -> value, without the machine-specific paths (the
    ``paths`` group and any value that contains one of them) and the observers."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(config, "")
    paths = [str(v) for k, v in flat.items() if k.startswith("paths.") and v]
    return {
        k: v
        for k, v in flat.items()
        if not k.startswith(("paths.", *OBSERVERS))
        and not (isinstance(v, str) and any(p in v for p in paths))
    }


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between the config a run trained with and today's, as ``key: old -> new``.

    Keys the code gained since the run are not changes: new options default to the old
    behaviour (a stage's chance 0, a feature off), so adding one does not retrain everything.
    ``auto`` (precision, memory layout) matches what the hardware resolved it to then; the
    table lists each seed's precision and machine class.
    """
    before, after = settings(old), settings(new)
    return [
        f"{k}: {before[k]!r} -> {after.get(k, '<removed>')!r}"
        for k in before
        if after.get(k, "<removed>") not in (before[k], AUTO)
    ]


def run_seed(
    preset: str, seed: int, runs_dir: Path, extra: Sequence[str] = (), fresh: bool = False
) -> dict[str, Any]:
    """Train ``preset`` with ``seed`` into ``runs_dir/preset/seedN``, or reuse the finished run
    there when it trained with today's config (the one its checkpoint stores). Returns the
    run's metrics."""
    overrides = [f"experiment={preset}", f"seed={seed}", "logger=none", *extra]
    out = runs_dir / preset / f"seed{seed}"
    cfg = compose_train_config(overrides, out)
    done = out / DONE
    changes: list[str] = []
    if done.exists() and not fresh:
        metrics = json.loads(done.read_text())["metrics"]
        ckpt = metrics.get("best_ckpt")
        if ckpt and Path(ckpt).exists():
            old = run_config(ckpt)
            changes = config_changes(old, cast(dict, OmegaConf.to_container(cfg, resolve=True)))
            if not changes:
                print(f"accuracy  {preset} seed {seed}: reusing the finished run in {out}")
                return {**metrics, "reused": True}
    if out.exists():  # unfinished, changed or --fresh: keep a finished run aside
        if done.exists():
            old_dir = out.with_name(
                f"{out.name}.old{len(list(out.parent.glob(out.name + '.old*')))}"
            )
            out.rename(old_dir)
            why = "; ".join(changes) or "--fresh or its checkpoint is gone"
            print(f"accuracy  {preset} seed {seed}: retraining ({why}); old run in {old_dir}")
        else:
            shutil.rmtree(out)
    print(f"accuracy  {preset} seed {seed}: training into {out}", flush=True)
    metrics = train(cfg)
    done.write_text(json.dumps({"overrides": overrides, "metrics": metrics}) + "\n")
    return metrics


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
        # --quick never touches the real runs (unless a folder is given)
        root = Path(runs_dir) if runs_dir else Path(tmp) if quick else RUNS_DIR
        table: dict[str, Any] = {}
        for preset in presets:
            runs = [run_seed(preset, seed, root, extra, fresh) for seed in range(seeds)]
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
            runs = [run_seed(p, s, root, extra) for p, s in members]
            table["mix"] = {
                "members": [f"{p}:{s}" for p, s in members],
                "test_acc": [r["test/acc"] for r in runs],
                **_ensemble([r["best_ckpt"] for r in runs], quick),
            }
    return table
