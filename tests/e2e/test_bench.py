"""The benchmark command's machinery (quick mode): structure and sane values, not the targets."""

from __future__ import annotations

import json

import pytest

from mnist_lab.training.hardware import resolve_precision
from tests.helpers import run_module

pytestmark = pytest.mark.slow  # benchmarks train and time real runs


def test_help_lists_the_sub_benchmarks():
    out = run_module("mnist_lab.bench", "--help").stdout
    for name in (
        "machine",
        "data",
        "loop",
        "time",
        "accuracy",
        "augment",
        "robustness",
        "zoo",
        "photos",
        "--crossing",
    ):
        assert name in out


def test_quick_bench_writes_a_complete_json(tmp_path):
    out = tmp_path / "bench.json"
    # `machine` is checked by tests/test_hardware.py, `accuracy` in-process below
    proc = run_module("mnist_lab.bench", "data", "loop", "time", "--quick", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["machine"]["torch_threads"] == 2 and result["machine"]["torch"]
    data = result["data"]
    assert data["ours_images_per_s"] > 0 and data["ratio"] > 0
    baseline = data["torchvision_images_per_s"]
    assert set(baseline) == {"num_workers=0", "num_workers=2"}
    assert all(v > 0 for v in baseline.values())
    loop = result["loop"]
    assert loop["plain_s_per_epoch"] > 0 and loop["lightning_s_per_epoch"] > 0 and loop["ratio"] > 0
    time_ = result["time"]  # the final accuracy of the fixed schedule, not a test-set pick
    run = time_["runs"][0]
    assert 0 <= run["test_acc"] <= 1 and run["train_seconds"] > 0
    assert time_["test_acc_mean"] == run["test_acc"] and time_["train_seconds_median"] > 0
    assert time_["precision"] == run["precision"] == resolve_precision("auto", "auto")
    assert "first_crossing_on_test_set" not in time_  # only with --crossing, as a side column
    assert result["machine"]["class"] and result["machine"]["isa"]
    assert "data" in proc.stdout and "final test acc" in proc.stdout


def test_time_crossing_is_a_labelled_side_column(tmp_path):
    """--crossing keeps the run to its end (final accuracy) and labels the test-set pick."""
    out = tmp_path / "time.json"
    proc = run_module(
        "mnist_lab.bench",
        "time",
        "--quick",
        "--crossing",
        "--preset",
        "lenet_baseline",
        "--out",
        str(out),
        timeout=300,
    )
    time_ = json.loads(out.read_text())["time"]
    run = time_["runs"][0]
    assert set(time_["first_crossing_on_test_set"]) == {"0.990", "0.995"}
    assert run["history"] and run["global_steps"] == 20  # not stopped at a target: all 20 steps
    steps = [h["step"] for h in run["history"]]
    assert steps == sorted(steps) and run["crossing_eval_seconds"] > 0
    assert "chosen on the test set" in proc.stdout


def test_quick_augment_and_robustness_benchmarks(tmp_path):
    """`bench augment` times every robust stage; `bench robustness` trains each preset per seed,
    runs the suite and reports the time ratio to the first preset."""
    out = tmp_path / "robust.json"
    proc = run_module(
        "mnist_lab.bench",
        "augment",
        "robustness",
        "--quick",
        "--presets",
        "fast",
        "lenet_baseline",
        "--out",
        str(out),
        timeout=600,
    )
    result = json.loads(out.read_text())
    ours = result["augment"]["ours_ms"]
    assert {"stroke", "blur", "light", "noise", "lines", "erase", "all (robust.yaml)"} <= set(ours)
    assert all(ms > 0 for ms in ours.values())
    fast, lenet = result["robustness"]["fast"], result["robustness"]["lenet_baseline"]
    assert fast["time_vs_fast_median"] == 1.0 and lenet["time_vs_fast_median"] > 0
    assert len(fast["corruptions_mean"]) == 15 and 0 < fast["mean_corrupt_acc_mean"] <= 1
    assert len(fast["cross_source_mean"]) == 7 and 0 < fast["mean_cross_source_acc_mean"] <= 1
    assert "mean over the suite" in proc.stdout and "cross-source" in proc.stdout


def test_accuracy_reuses_finished_runs_and_retrains_what_changed(tmp_path, capsys):
    """Hour-long accuracy runs can be split across sessions: finished (preset, seed) runs with
    the same composed config are reused, unfinished or changed ones retrain."""
    from mnist_lab.bench.accuracy import DONE, bench_accuracy, run_seed
    from mnist_lab.bench.cli import format_table
    from mnist_lab.training.hardware import machine_info

    first = bench_accuracy(True, ["lenet_baseline"], 2, runs_dir=tmp_path)["lenet_baseline"]
    assert len(first["test_acc"]) == 2 and 0 < first["mean"] <= 1 and first["std"] >= 0
    assert all(0 < first[k] <= 1 for k in ("ensemble", "ensemble_tta", "ensemble_val"))
    assert 0 < first["ensemble_tta_val"] <= 1
    assert first["reused"] == 0 and (tmp_path / "lenet_baseline" / "seed1" / DONE).exists()
    (tmp_path / "lenet_baseline" / "seed1" / DONE).unlink()  # as if killed before the end
    again = bench_accuracy(
        True, ["lenet_baseline"], 2, runs_dir=tmp_path, mix=["lenet_baseline:0,1"]
    )
    row = again["lenet_baseline"]
    assert row["reused"] == 1 and row["test_acc"][0] == first["test_acc"][0]
    assert again["mix"]["members"] == ["lenet_baseline:0", "lenet_baseline:1"]
    assert again["mix"]["test_acc"] == row["test_acc"]  # the same checkpoints, re-evaluated
    assert "reusing the finished run" in capsys.readouterr().out
    table = format_table({"machine": machine_info(), "accuracy": again})
    assert "accuracy  lenet_baseline" in table and "ensemble of lenet_baseline:0" in table
    # what only watches a run (figures, learning-rate monitor, loggers) is not a change
    watched = ["debug=tiny", "callbacks.figures.every_n_epochs=3", "callbacks.lr_monitor=null"]
    assert run_seed("lenet_baseline", 0, tmp_path, watched)["reused"]
    capsys.readouterr()
    changed = run_seed("lenet_baseline", 0, tmp_path, ["debug=tiny", "optimizer.lr=0.01"])
    assert not changed.get("reused")
    assert "optimizer.lr: 0.05 -> 0.01" in capsys.readouterr().out  # says what changed
    assert (tmp_path / "lenet_baseline" / "seed0.old0" / DONE).exists()  # kept, not deleted


def test_zoo_table_has_every_column_per_preset(tmp_path, capsys):
    """The model-zoo row of a convolutional and a recurrent preset (debug=tiny runs, kept in
    --runs and reused on a second call): costs from the net, accuracy from the kept runs."""
    from hydra.utils import instantiate

    from mnist_lab.bench.cli import main
    from mnist_lab.models import count_parameters, multiply_adds
    from tests.helpers import compose_cfg

    args = ["zoo", "--quick", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "z.json")]
    table = main(args)["zoo"]
    assert list(table) == ["lenet_baseline", "rnn"]
    for preset, row in table.items():
        net = instantiate(compose_cfg([f"experiment={preset}"]).model)
        assert row["parameters"] == count_parameters(net)
        assert row["multiply_adds"] == multiply_adds(net) > row["parameters"]
        assert row["seeds"] == 1 and 0 <= row["test_acc_mean"] <= 1 and row["test_acc_std"] == 0
        assert 0 <= row["corrupt_acc_mean"] <= 1 and row["onnx_ms_per_image"] > 0
        assert row["train_seconds_median"] > 0 and row["reused"] == 0
    out = capsys.readouterr().out
    assert "| `rnn` | 559,626 |" in out and "ONNX ms / image" in out
    again = main(args)["zoo"]  # nothing retrained: the kept runs are reused
    assert all(row["reused"] == 1 for row in again.values())
    assert again["rnn"]["test_acc"] == table["rnn"]["test_acc"]


def test_families_measure_what_auto_knows(tmp_path):
    """float32 and bf16 images/s per family, and `auto`'s pick beside them: never bf16 for the
    ViT on a CPU; the CNN's pick is the machine's (bf16 where native)."""
    from mnist_lab.bench.cli import main

    table = main(["families", "--quick", "--out", str(tmp_path / "f.json")])["families"]
    assert "torchvision ViT, plain, 7x7 patches" in table and len(table) >= 7
    for name, row in table.items():
        assert all(v > 0 for v in row["images_per_s"].values()), name
    assert table["vit (conv stem, 16 tokens)"]["auto"] == "32"
    assert table["fast (CNN)"]["auto"] == resolve_precision("auto", "auto")
    assert table["rnn (rows, 2x bi-LSTM-128)"]["channels_last"] is False


def test_quick_photos_benchmark(tmp_path):
    """20 rendered photos of one seed, 5 of them as 12-MP JPEGs, and the predict command once:
    accuracy, medians and the summary line, with the shipped model."""
    out = tmp_path / "bench.json"
    proc = run_module("mnist_lab.bench", "photos", "--quick", "--photo-seeds", "3", "--out",
                      str(out))  # fmt: skip
    photos = json.loads(out.read_text())["photos"]
    row = photos["seeds"]["3"]
    assert photos["n"] == 20 and row["right"] >= 17 and len(row["misread"]) == 20 - row["right"]
    assert photos["12mp_jpegs"] == 5
    for key in ("ms_per_photo_median", "ms_per_12mp_jpeg_median", "predict_command_ms_per_photo"):
        assert photos[key] > 0
    assert "photos    seed 3:" in proc.stdout and "per 12-MP JPEG" in proc.stdout
