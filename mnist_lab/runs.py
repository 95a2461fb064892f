"""The run directory: what a command writes into it and what the others read back, in one place.

A run directory (``logs/train/runs/<time>``, or a sweep job's ``logs/train/multiruns/<time>/<n>``)::

    .hydra/                   the composed config and the overrides (written by Hydra)
    checkpoints/              epochNNN-val_acc*.ckpt (the best on validation), last.ckpt;
                              model.onnx / model.pt from `export` when no `out` is given
    metrics.json              `train`'s result                          (TRAIN, schema "train/1")
    eval/metrics.json         `eval`'s report + confusion_matrix.png, errors.png, per_class.md
                                                                          (EVAL, schema "eval/1")
    eval/robustness/, robustness/metrics.json
                              the corruption suite + table.md, robustness.png
                                                              (ROBUSTNESS, schema "robustness/1")
    error.txt                 why a sweep job failed: the one-line summary first, then details
    error.rank<R>.txt         the same from DDP rank R of a sweep job, for rank 0 to report

Every ``metrics.json`` carries a ``schema`` key, ``<kind>/<version>``; files written before the
key existed read as version 1 of the kind their place says. A reader asks for the kind it
understands and gets a clear error for another (a robustness report given where a training run
is expected). No torch: the server and the report read runs too.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any, Literal

from mnist_lab.errors import CheckpointError

METRICS = "metrics.json"
ERROR = "error.txt"
RANK_ERROR = "error.rank{rank}.txt"  # a failed DDP rank of a sweep job; rank 0 reads it
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
EVAL = "eval"
ROBUSTNESS = "robustness"

Kind = Literal["train", "eval", "robustness"]
TRAIN: Kind = "train"
VERSION = 1

# The keys of each kind, what they mean: the schema the readers rely on (a writer may add keys).
SCHEMAS: dict[str, dict[str, str]] = {
    "train": {
        "test/acc": "accuracy on the 10,000 test images of the checkpoint chosen on validation",
        "test/loss": "its mean cross-entropy on the test set",
        "val/acc_best": "the best validation accuracy (what chose the checkpoint)",
        "params": "trainable parameters of the net",
        "epochs": "epochs trained",
        "global_steps": "optimizer steps",
        "world_size": "processes that trained together (DDP)",
        "train_seconds": "wall-clock seconds of fit(), without start-up and test",
        "model": "the model group's choice (mlp, lenet, ...)",
        "optimizer": "the optimizer group's choice",
        "scheduler": "the scheduler group's choice",
        "seed": "the run's seed",
        "best_ckpt": "path of the checkpoint chosen on validation (null without one)",
        "precision": "the precision trained in (auto resolved)",
        "channels_last": "whether the net ran channels_last (auto resolved)",
        "machine": "the CPU/GPU it trained on",
        "trackers": "where TensorBoard/MLflow/W&B keep the run's curves",
    },
    "eval": {
        "test/acc": "the Trainer's test accuracy (what train reported)",
        "test/loss": "its test loss",
        "acc": "accuracy from the predicted probabilities",
        "per_class": "precision, recall and F1 per digit",
        "confusion_matrix": "10x10 counts, rows true, columns predicted",
        "ckpt_path": "the checkpoint evaluated",
        "robustness": "clean and mean corrupted accuracy, with eval robustness=true",
    },
    "robustness": {
        "clean_acc": "accuracy on the clean images",
        "corruptions": "accuracy per corruption",
        "mean_corrupt_acc": "mean over the suite",
        "cross_source": "accuracy per cross-source condition (other writers and scanners)",
        "mean_cross_source_acc": "mean over the cross-source suite",
        "model": "the checkpoint or ONNX file tested",
    },
}


def metrics_path(directory: Path | str) -> Path:
    return Path(directory) / METRICS


def has_metrics(directory: Path | str) -> bool:
    return metrics_path(directory).is_file()


def write_metrics(directory: Path | str, kind: Kind, metrics: dict[str, Any]) -> Path:
    """``directory/metrics.json`` with its ``schema``; returns the path."""
    path = metrics_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": f"{kind}/{VERSION}", **metrics}, indent=2) + "\n")
    return path


def read_metrics(directory: Path | str, kind: Kind) -> dict[str, Any]:
    """The ``metrics.json`` of ``directory``, refused by name if it is another kind's."""
    path = metrics_path(directory)
    metrics = json.loads(path.read_text())
    found = _kind(Path(directory), metrics)
    if found != kind:
        raise CheckpointError(f"{path} is {found}'s report, not a {kind} run's metrics")
    return metrics


def _kind(directory: Path, metrics: dict[str, Any]) -> str:
    """The schema's kind; before the key existed, the place says it (eval/, robustness/)."""
    if "schema" in metrics:
        return str(metrics["schema"]).split("/")[0]
    return directory.name if directory.name in (EVAL, ROBUSTNESS) else "train"


def checkpoints_dir(run: Path | str) -> Path:
    return Path(run) / CHECKPOINTS


def last_checkpoint(run: Path | str) -> Path:
    return checkpoints_dir(run) / LAST


def best_checkpoint(run: Path | str) -> Path:
    """What a run directory stands for: its best checkpoint on validation, else last.ckpt."""
    best = read_metrics(run, "train").get("best_ckpt") if has_metrics(run) else None
    return Path(best) if best else last_checkpoint(run)


def finished_runs(directory: Path | str) -> list[Path]:
    """The training runs directly inside ``directory`` (a sweep) that finished: those with a
    train ``metrics.json`` (not a run's own eval/ or robustness/ folder)."""
    found = sorted(p.parent for p in Path(directory).glob(f"*/{METRICS}"))
    return [
        run for run in found if _kind(run, json.loads(metrics_path(run).read_text())) == "train"
    ]


def eval_dir(run: Path | str) -> Path:
    return Path(run) / EVAL


def robustness_dir(run: Path | str) -> Path:
    return Path(run) / ROBUSTNESS


def error_file(run: Path | str, rank: int | str | None = None) -> Path:
    """``error.txt``, or ``error.rank<R>.txt`` for a DDP rank that failed inside a sweep job."""
    return Path(run) / (ERROR if rank is None else RANK_ERROR.format(rank=rank))


def error_summary(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"  # one line


def write_error(run: Path | str, err: BaseException | str, rank: int | str | None = None) -> Path:
    """Why a job (or one DDP rank of it) failed: the one-line summary first, what the report
    and rank 0 show, then the traceback of an exception. A message alone is written as is."""
    path = error_file(run, rank)
    if isinstance(err, str):
        path.write_text(f"{err}\n")
    else:
        trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        path.write_text(f"{error_summary(err)}\n\n{trace}")
    return path


def read_error(path: Path) -> str:
    """The summary line of an error file."""
    lines = path.read_text().strip().splitlines()
    return lines[0] if lines else ""


def job_error(run: Path | str) -> str | None:
    """The summary of a failed job's ``error.txt``, None when there is none."""
    path = error_file(run)
    return read_error(path) if path.is_file() else None


def rank_errors(run: Path | str) -> list[tuple[str, Path]]:
    """(rank, file) of each DDP rank that left an error in the job's directory, lowest first."""
    found = sorted(Path(run).glob(RANK_ERROR.format(rank="*")))
    return [(p.name.split(".")[1].removeprefix("rank"), p) for p in found]
