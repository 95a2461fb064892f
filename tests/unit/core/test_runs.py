"""The run directory's contract (mnist_lab/runs.py): one writer and one reader per file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mnist_lab import runs
from mnist_lab.errors import CheckpointError

PACKAGE = Path(runs.__file__).parent


def test_metrics_carry_their_schema_and_old_files_read_by_their_place(tmp_path):
    run = tmp_path / "run"
    runs.write_metrics(run, "train", {"test/acc": 0.99, "best_ckpt": None})
    assert json.loads((run / "metrics.json").read_text())["schema"] == "train/1"
    assert runs.read_metrics(run, "train")["test/acc"] == 0.99
    # written before the key existed: a run's own file is a training run's, eval/'s is eval's
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text('{"acc": 0.5}')
    (run / "metrics.json").write_text('{"test/acc": 0.98}')
    assert runs.read_metrics(run, "train")["test/acc"] == 0.98
    assert runs.read_metrics(run / "eval", "eval")["acc"] == 0.5
    with pytest.raises(CheckpointError, match=r"eval/metrics.json is eval's report, not a train"):
        runs.read_metrics(run / "eval", "train")


def test_a_run_stands_for_its_best_checkpoint_and_a_sweep_for_its_finished_runs(tmp_path):
    sweep = tmp_path / "sweep"
    best = sweep / "0" / "checkpoints" / "epoch003.ckpt"
    runs.write_metrics(sweep / "0", "train", {"best_ckpt": str(best)})
    runs.write_metrics(sweep / "1", "train", {"best_ckpt": None})
    (sweep / "2").mkdir()  # unfinished: no metrics
    runs.write_metrics(sweep / "eval", "eval", {"acc": 1.0})  # not a run
    assert runs.finished_runs(sweep) == [sweep / "0", sweep / "1"]
    assert runs.best_checkpoint(sweep / "0") == best
    assert runs.best_checkpoint(sweep / "1") == sweep / "1" / "checkpoints" / "last.ckpt"


def test_errors_lead_with_one_summary_line(tmp_path):
    try:
        raise ValueError("data.batch_size=0\n   must be positive")
    except ValueError as err:
        path = runs.write_error(tmp_path, err)
    text = path.read_text()
    assert text.startswith("ValueError: data.batch_size=0 must be positive\n\nTraceback")
    assert runs.job_error(tmp_path) == "ValueError: data.batch_size=0 must be positive"
    runs.write_error(tmp_path, RuntimeError("rank one broke"), rank=1)
    runs.write_error(tmp_path, RuntimeError("rank three broke"), rank=3)
    (rank, first), _ = runs.rank_errors(tmp_path)
    assert rank == "1" and runs.read_error(first) == "RuntimeError: rank one broke"
    assert runs.job_error(tmp_path / "nowhere") is None


def test_only_runs_py_names_the_run_directorys_files():
    named = []
    for source in PACKAGE.rglob("*.py"):
        if source.name == "runs.py":
            continue
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if re.search(r"""["'](metrics\.json|error\.txt|error\.rank)""", line):
                named.append(f"{source.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not named, named
