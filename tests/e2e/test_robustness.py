"""The corruption suite (mnist_lab.data.corruptions) and the robustness report on real
checkpoints."""

from __future__ import annotations

import json

import pytest

from mnist_lab.data.corruptions import CORRUPTIONS, CROSS_SOURCE
from tests.helpers import run_module


@pytest.mark.slow  # trained models and command subprocesses
def test_robustness_report_for_a_run_and_its_onnx_export(good_run, onnx_export, tmp_path):
    """The command writes <run>/robustness with the suite's numbers, the table and the figure;
    the exported ONNX model gives the same accuracies (same corrupted images, same weights)."""
    proc = run_module(
        "mnist_lab.robustness",
        f"ckpt_path={good_run}",
        "limit=300",
        "threads=2",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    out = good_run / "robustness"
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["corruptions"]) == set(CORRUPTIONS)
    values = list(report["corruptions"].values())
    assert report["mean_corrupt_acc"] == pytest.approx(sum(values) / len(values), abs=1e-4)
    assert report["n_images"] == 300 and report["clean_acc"] > 0.95
    assert min(values) < report["clean_acc"]  # the suite costs accuracy somewhere
    assert (out / "robustness.png").stat().st_size > 20_000
    assert "| fog |" in proc.stdout and "mean over the suite" in proc.stdout
    # the cross-source suite, reported apart so the MNIST-C mean keeps its meaning
    assert set(report["cross_source"]) == set(CROSS_SOURCE)
    cross = list(report["cross_source"].values())
    assert report["mean_cross_source_acc"] == pytest.approx(sum(cross) / len(cross), abs=1e-4)
    assert "| usps_frame |" in proc.stdout and "mean over the cross-source suite" in proc.stdout
    onnx, _ = onnx_export
    onnx_out = tmp_path / "onnx_rob"
    run_module(
        "mnist_lab.robustness",
        f"ckpt_path={onnx}",
        "limit=300",
        f"out_dir={onnx_out}",
        "corruptions=[fog,stripe,rotate,lowres]",
        f"hydra.run.dir={tmp_path / 'o'}",
    )
    from_onnx = json.loads((onnx_out / "metrics.json").read_text())
    assert list(from_onnx["corruptions"]) == ["fog", "stripe", "rotate"]
    assert list(from_onnx["cross_source"]) == ["lowres"]
    both, theirs = report["corruptions"] | report["cross_source"], from_onnx["corruptions"]
    for name, acc in (theirs | from_onnx["cross_source"]).items():  # int8: within 2 of 300
        assert acc == pytest.approx(both[name], abs=2 / 300)


@pytest.mark.slow  # trained models and command subprocesses
def test_eval_can_include_the_suite(trained_runs, tmp_path):
    run = trained_runs[0]
    run_module(
        "mnist_lab.eval",
        f"ckpt_path={run}",
        "robustness=true",
        "robustness_limit=200",
        f"hydra.run.dir={tmp_path}",
    )
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    suite = json.loads((run / "robustness" / "metrics.json").read_text())
    assert evaluated["robustness"]["mean_corrupt_acc"] == suite["mean_corrupt_acc"]
    assert evaluated["robustness"]["mean_cross_source_acc"] == suite["mean_cross_source_acc"]
    assert suite["n_images"] == 200 and len(suite["corruptions"]) == 15
    assert len(suite["cross_source"]) == len(CROSS_SOURCE)


@pytest.mark.slow  # trained models and command subprocesses
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("corruptions=[fog,snow]", "unknown ['snow']"),
        ("split=train", "use split=test or split=val"),
    ],
)
def test_bad_robustness_settings_are_one_clear_error(good_run, override, message, tmp_path):
    proc = run_module(
        "mnist_lab.robustness",
        f"ckpt_path={good_run}",
        override,
        f"hydra.run.dir={tmp_path}",
        check=False,
        full_error=False,
    )
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
