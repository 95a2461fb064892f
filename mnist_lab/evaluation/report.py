"""Rank the runs of a sweep (``python -m mnist_lab.report DIR [DIR ...]``).

DIR is a multirun directory (every job in it) or a single run directory. Writes
``summary.md``, ``summary.csv`` and ``summary.png`` (accuracy vs training time) into the first
DIR (or ``--out``), and prints the table. A job without ``metrics.json`` is listed as failed,
with the error summary (first line of its ``error.txt``) when there is one.

``SweepSummary`` is the Hydra callback that keeps the summary of a running multirun current.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_lab import runs
from mnist_lab.ranks import is_rank_zero

log = logging.getLogger(__name__)
COLUMNS = [
    "job", "model", "optimizer", "scheduler", "overrides", "params", "epochs",
    "test_acc", "val_acc_best", "train_seconds", "status",
]  # fmt: skip


def job_dirs(paths: list[Path]) -> list[Path]:
    """Run directories: a path that holds a run (``.hydra/``) is one, else its sub-folders are."""
    found = []
    for path in paths:
        if (path / ".hydra").is_dir() or runs.has_metrics(path):
            found.append(path)
        else:
            subdirs = [p for p in path.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
            found.extend(
                sorted(
                    subdirs,
                    key=lambda p: (
                        not p.name.isdigit(),
                        int(p.name) if p.name.isdigit() else 0,
                        p.name,
                    ),
                )
            )
    return found


def _hydra_file(run: Path, name: str) -> Any:
    path = run / ".hydra" / name
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else None


def summarise_run(run: Path) -> dict[str, Any]:
    """One row: what the job was (its choices and overrides) and what it measured."""
    hydra_cfg = _hydra_file(run, "hydra.yaml") or {}
    choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {})
    overrides = _hydra_file(run, "overrides.yaml") or []
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(
        job=run.name,
        model=choices.get("model"),
        optimizer=choices.get("optimizer"),
        scheduler=choices.get("scheduler"),
        overrides=overrides,
    )
    if runs.has_metrics(run):
        m = runs.read_metrics(run, "train")
        row.update(
            model=m.get("model", row["model"]),
            optimizer=m.get("optimizer", row["optimizer"]),
            scheduler=m.get("scheduler", row["scheduler"]),
            params=m.get("params"),
            epochs=m.get("epochs"),
            test_acc=m.get("test/acc"),
            val_acc_best=m.get("val/acc_best"),
            train_seconds=m.get("train_seconds"),
            status="ok",
        )
    else:
        row.update(status="failed", error=runs.job_error(run) or f"no {runs.METRICS}")
    return row


def summarise(paths: list[Path]) -> list[dict[str, Any]]:
    """All rows, best test accuracy first, failed jobs last. The overrides column keeps what
    differs between jobs; what every job shares is returned in ``common``."""
    rows = [summarise_run(run) for run in job_dirs(paths)]
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    for row in rows:
        row["common"] = " ".join(o for o in row["overrides"] if o in shared)
        row["overrides"] = " ".join(o for o in row["overrides"] if o not in shared)
    return sorted(rows, key=lambda r: (r["status"] != "ok", -(r["test_acc"] or 0.0)))


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("test_acc", "val_acc_best"):
        return f"{value:.4f}"
    if key == "train_seconds":
        return f"{value:.1f}"
    if key == "params":
        return f"{value:,}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = (
        [f"Overrides shared by all jobs: `{rows[0]['common']}`\n"]
        if rows and rows[0]["common"]
        else []
    )
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(c, row[c]) for c in COLUMNS) + " |")
    failed = [r for r in rows if r["status"] != "ok"]
    for row in failed:
        lines.append(f"\njob {row['job']} failed: {row.get('error')}")
    return "\n".join(lines) + "\n"


def write_report(paths: list[Path], out: Path | None = None) -> tuple[list[dict[str, Any]], Path]:
    rows = summarise(paths)
    out = out or paths[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(to_markdown(rows))
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    from mnist_lab.evaluation.figures import (  # matplotlib + torch: only when drawing
        save,
        summary_figure,
    )

    save(summary_figure(rows), out / "summary.png")
    return rows, out


class SweepSummary(Callback):
    """Hydra callback: saves a failed job's traceback in its directory, and rewrites the sweep's
    summary after every job, so it is complete even when a job fails and the sweep ends in
    Hydra's error (which skips ``on_multirun_end``)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # Every entry point has this callback (conf/hydra/default.yaml); a single run (a
        # server among them) returns before importing Lightning.
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        if not is_rank_zero():  # a SLURM job with several tasks runs this once per task
            return
        run = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            # the exception; .return_value would re-raise it
            runs.write_error(run, job_return._return_value)
        _, out = write_report([Path(config.hydra.sweep.dir)])
        if job_return.status == JobStatus.FAILED:
            log.warning(
                "job %s failed; the sweep goes on (summary: %s)", run.name, out / "summary.md"
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        rows, out = write_report([Path(config.hydra.sweep.dir)])
        print(to_markdown(rows), end="")
        print(f"sweep summary written to {out}/summary.md")
