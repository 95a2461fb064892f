"""Read a run's logged curves back, whichever logger wrote them: TensorBoard events, the CSV
log, an MLflow store or a W&B offline run (the last two found through ``metrics.json``'s
``trackers``). ``eval`` draws ``curves.png`` from them; tests read the stores with it."""

from __future__ import annotations

import csv
import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_lab import runs

log = logging.getLogger(__name__)

# logged tag -> curve name (Lightning adds _epoch to values logged both per step and per epoch)
EPOCH_TAGS = {
    "train/loss_epoch": "train/loss",
    "train/acc_epoch": "train/acc",
    "val/loss": "val/loss",
    "val/acc": "val/acc",
}
Curves = dict[str, list[tuple[int, float]]]


def read_epoch_curves(run_dir: Path) -> Curves:
    """Per-epoch train/val loss and accuracy; empty lists when the run logged nothing."""
    curves: Curves = {name: [] for name in EPOCH_TAGS.values()}
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
    else:
        for ref in _trackers(run_dir):
            if ref.get("tracker") == "mlflow":
                return mlflow_curves(ref["tracking_uri"], ref["run_id"])
            if ref.get("tracker") == "wandb" and Path(ref["dir"]).is_dir():
                return wandb_curves(Path(ref["dir"]))
    return curves


def _trackers(run_dir: Path) -> list[dict[str, str]]:
    if not runs.has_metrics(run_dir):
        return []
    return runs.read_metrics(run_dir, "train").get("trackers", [])


def mlflow_curves(tracking_uri: str, run_id: str) -> Curves:
    """The epoch curves of one MLflow run, through MLflow's own client."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    epoch_at = {m.step: int(m.value) for m in client.get_metric_history(run_id, "epoch")}
    return {
        name: [
            (epoch_at.get(m.step, m.step), m.value) for m in client.get_metric_history(run_id, tag)
        ]
        for tag, name in EPOCH_TAGS.items()
    }


def wandb_curves(run_dir: Path) -> Curves:
    """The epoch curves of a W&B offline run (``wandb/offline-run-*``), from its history rows."""
    curves: Curves = {name: [] for name in EPOCH_TAGS.values()}
    for row in wandb_rows(run_dir, "history"):
        for tag, name in EPOCH_TAGS.items():
            if tag in row and "epoch" in row:
                curves[name].append((int(row["epoch"]), float(row[tag])))
    return curves


def wandb_rows(run_dir: Path, kind: str) -> Iterator[dict[str, Any]]:
    """The ``history``, ``config`` or ``summary`` records of a W&B run as dicts.

    A run's ``run-<id>.wandb`` file is W&B's transaction log, what ``wandb sync`` uploads:
    a 7-byte header, then 32 KiB blocks of LevelDB-log framed chunks (checksum, length,
    type: full / first / middle / last), each record one of W&B's own protobuf ``Record``s.
    The SDK no longer ships a Python reader for it, so the framing is read here.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    field = {"history": "item", "config": "update", "summary": "update"}[kind]
    for path in sorted(run_dir.glob("run-*.wandb")):
        for raw in _leveldb_log(path.read_bytes(), path):
            record = pb.Record.FromString(raw)  # type: ignore[attr-defined]
            if record.WhichOneof("record_type") == kind:
                items = getattr(getattr(record, kind), field)
                yield {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in items
                }


_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _leveldb_log(data: bytes, path: Path) -> Iterator[bytes]:
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        log.warning(
            "%s: not a W&B run file this version reads (%r, %#x, %d)", path, ident, magic, version
        )
        return
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        space = _BLOCK - pos % _BLOCK
        if space < _HEADER:  # a block's tail too short for a chunk header is padding
            pos += space
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
        else:  # zeros: the rest of the file was never written (a run still open)
            return
