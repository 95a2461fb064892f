"""The model that ships with the repo (``mnist_lab/serving/model/digits.onnx``): what
``predict`` and ``serve`` answer with when no ``ckpt_path`` is given.

:func:`ship` trains a preset run (or reuses the kept one, ``bench accuracy``'s), exports it to
ONNX with parity checked on the 10,000 test images, runs the corruption suite on the export and
writes the card beside it: recipe, seed, commit, machine, clean and suite accuracy, size.
``tests/unit/serving/test_shipped_model.py`` holds the file to its card's test accuracy.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mnist_lab.data.files import load_split
from mnist_lab.evaluation.export import export
from mnist_lab.evaluation.robustness import run_suite
from mnist_lab.paths import PROJECT_ROOT, SHIPPED_MODEL
from mnist_lab.serving.predictor import OnnxPredictor
from mnist_lab.training.kept_runs import RUNS_DIR, run_seed

MAX_BYTES = 2 * 2**20  # what a repo should carry for a model


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _relative(path: str | Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def ship(
    preset: str = "robust",
    seed: int = 0,
    out: Path = SHIPPED_MODEL,
    runs_dir: Path = RUNS_DIR,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train (or reuse) ``preset`` seed ``seed``, export it to ``out`` and write its card."""
    metrics = run_seed(preset, seed, runs_dir, fresh=fresh)
    options = {"ckpt_path": metrics["best_ckpt"], "format": "onnx", "quantize": None}
    report = export(OmegaConf.create(options | {"out": str(out), "data_dir": None}))
    if report["size_bytes"] > MAX_BYTES:
        raise ValueError(f"{out} is {report['size_bytes']:,} bytes: ship a model under 2 MiB")
    images, labels = load_split("test")
    with tempfile.TemporaryDirectory() as tmp:
        suite = run_suite(OnnxPredictor(out), images, labels, Path(tmp))
    card = report | {
        "out": _relative(out),
        "ckpt_path": _relative(report["ckpt_path"]),
        "recipe": f"experiment={preset}",
        "seed": seed,
        "commit": _commit(),
        "machine": metrics["machine"]["class"],
        "params": metrics["params"],
        "train_seconds": metrics["train_seconds"],
        "val/acc_best": metrics["val/acc_best"],
        "clean_acc": suite["clean_acc"],
        "suite_mean_acc": suite["mean_corrupt_acc"],
        "suite": suite["corruptions"],
        "cross_source_mean_acc": suite["mean_cross_source_acc"],
        "cross_source": suite["cross_source"],
        "rebuild": f"python -m mnist_lab.ship --preset {preset} --seed {seed}",
    }
    out.with_name(out.name + ".json").write_text(json.dumps(card, indent=2) + "\n")
    return card
