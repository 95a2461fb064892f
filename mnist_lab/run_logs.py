"""Read a run's logged curves back, from its TensorBoard events or its CSV log."""

from __future__ import annotations

import csv
from pathlib import Path

# logged tag -> curve name (Lightning adds _epoch to values logged both per step and per epoch)
EPOCH_TAGS = {
    "train/loss_epoch": "train/loss",
    "train/acc_epoch": "train/acc",
    "val/loss": "val/loss",
    "val/acc": "val/acc",
}


def read_epoch_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch train/val loss and accuracy; empty lists when the run logged nothing."""
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in EPOCH_TAGS.values()}
    tb_dir = run_dir / "tensorboard"
    csv_files = sorted(run_dir.glob("csv/**/metrics.csv"))
    if tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        # Lightning logs the epoch number beside every metric: it maps steps to epochs.
        epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}
        for tag, name in EPOCH_TAGS.items():
            if tag in tags:
                curves[name] = [(epoch_at.get(e.step, e.step), e.value) for e in acc.Scalars(tag)]
    elif csv_files:
        with csv_files[-1].open() as f:
            for row in csv.DictReader(f):
                for tag, name in EPOCH_TAGS.items():
                    if row.get(tag):
                        curves[name].append((int(float(row["epoch"])), float(row[tag])))
    return curves
