"""The benchmark command's machinery (quick mode): structure and sane values, not the targets."""

from __future__ import annotations

import json

from tests.conftest import run_module


def test_help_lists_the_sub_benchmarks():
    out = run_module("mnist_lab.bench", "--help").stdout
    for name in ("data", "loop", "time", "accuracy", "--quick", "--seeds"):
        assert name in out


def test_quick_bench_writes_a_complete_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_module("mnist_lab.bench", "--quick", "--out", str(out), timeout=600)
    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["machine"]["torch_threads"] == 2 and result["machine"]["torch"]
    data = result["data"]
    assert data["ours_images_per_s"] > 0 and data["ratio"] > 0
    assert all(v > 0 for v in data["seed_style_images_per_s"].values())
    loop = result["loop"]
    assert loop["plain_s_per_epoch"] > 0 and loop["lightning_s_per_epoch"] > 0 and loop["ratio"] > 0
    time_ = result["time"]
    assert set(time_["targets"]) == {"0.990", "0.995"}
    run = time_["runs"][0]
    assert run["history"] and run["train_seconds"] > 0 and run["eval_seconds"] > 0
    steps = [h["step"] for h in run["history"]]
    assert steps == sorted(steps) and 0 <= run["final_test_acc"] <= 1
    for preset in ("lenet_baseline", "fast"):
        row = result["accuracy"][preset]
        assert len(row["test_acc"]) == 2 and 0 < row["mean"] <= 1 and row["std"] >= 0
        assert 0 < row["ensemble"] <= 1 and 0 < row["ensemble_tta"] <= 1
    assert "data" in proc.stdout and "accuracy" in proc.stdout
