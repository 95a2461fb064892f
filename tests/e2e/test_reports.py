"""Evaluation reports, TensorBoard content and sweep summaries, checked on real runs' files."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_lab.report import main as report_main
from tests.helpers import read_metrics, run_module, train_in_process


def _png(path, min_side=300):
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and min(img.size) >= min_side, (path, img.size)
        extrema = img.convert("L").getextrema()
        assert extrema[0] < extrema[1], f"{path} is blank"
        return img.size


@pytest.fixture(scope="module")
def evaluated(tb_run, tmp_path_factory):
    proc = run_module(
        "mnist_lab.eval", f"ckpt_path={tb_run}", f"hydra.run.dir={tmp_path_factory.mktemp('ev')}"
    )
    return tb_run / "eval", proc


@pytest.mark.slow  # eval / sweep subprocesses
def test_eval_agrees_with_train_on_the_same_checkpoint(tb_run, evaluated):
    out, proc = evaluated
    report = json.loads((out / "metrics.json").read_text())
    trained = read_metrics(tb_run)
    assert report["ckpt_path"] == trained["best_ckpt"]
    assert report["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-4)
    assert report["test/loss"] == pytest.approx(trained["test/loss"], abs=1e-4)
    assert proc.stdout.strip().splitlines()[-1] == f"test/acc: {trained['test/acc']:.4f}"
    assert 0 < report["test/f1_macro"] <= 1 and 0 <= report["test/ece"] <= 1


@pytest.mark.slow  # eval / sweep subprocesses
def test_eval_numbers_are_consistent(evaluated):
    out, proc = evaluated
    report = json.loads((out / "metrics.json").read_text())
    per_class, matrix = report["per_class"], report["confusion_matrix"]
    support = sum(r["support"] for r in per_class.values())
    correct = sum(r["correct"] for r in per_class.values())
    assert support == 10_000 == sum(map(sum, matrix))
    assert correct / support == pytest.approx(report["test/acc"], abs=1e-6)
    for d in range(10):
        row = per_class[str(d)]
        assert matrix[d][d] == row["correct"] and sum(matrix[d]) == row["support"]
        assert row["recall"] == pytest.approx(row["accuracy"], abs=1e-6)
        column = sum(matrix[i][d] for i in range(10))
        assert row["precision"] == pytest.approx(matrix[d][d] / column if column else 0, abs=1e-6)
    table = (out / "per_class.md").read_text()
    assert f"| all | 10000 | {correct} |" in table and table in proc.stdout


@pytest.mark.slow  # eval / sweep subprocesses
def test_train_and_eval_agree_on_ema_weights(tmp_path):
    """EMA presets: `train` tests the averaged weights that validation chose, as `eval` does.
    (Lightning's EMA callback restores the raw weights on ``trainer.test(ckpt_path=...)``; after
    30 steps at decay 0.999 the two differ by far, so a regression shows.)"""
    overrides = ["experiment=cnn", "debug=tiny", "trainer.limit_train_batches=30"]
    overrides += ["trainer.limit_test_batches=null", "logger=none", "callbacks.figures=null"]
    train_in_process(overrides, tmp_path)  # eval tests all 10,000 images: so does train here
    run_module("mnist_lab.eval", f"ckpt_path={tmp_path}", f"hydra.run.dir={tmp_path / 'ev'}")
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(read_metrics(tmp_path)["test/acc"], abs=1e-6)


@pytest.mark.slow  # eval / sweep subprocesses
def test_eval_figures_are_real_pictures(evaluated):
    out, _ = evaluated
    for name in ("confusion_matrix", "errors", "reliability", "curves"):
        _png(out / f"{name}.png")


def test_tensorboard_has_scalars_images_and_hparams_with_metrics(tb_run):
    acc = EventAccumulator(str(tb_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in (
        "train/loss_step",
        "train/loss_epoch",
        "train/acc_step",
        "train/acc_epoch",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/acc",
        "test/loss",
        "lr-SGD/weights",
        "lr-SGD/norm_bias",
    ):
        assert tag in tags["scalars"], tag
    assert {"train/augmented_inputs", "val/confusion_matrix", "val/errors"} <= set(tags["images"])
    assert len(acc.Images("val/confusion_matrix")) == 2  # one per epoch (every_n_epochs=1)
    lrs = [e.value for e in acc.Scalars("lr-SGD/weights")]
    assert max(lrs) > lrs[-1]  # OneCycle really annealed
    content = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_names = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"test/acc", "val/acc_best"} <= metric_names
    hparam_names = {h.name for h in experiment.experiment.hparam_infos}
    assert {"model/_target_", "optimizer/lr", "seed"} <= hparam_names
    # the resolved precision/layout and the machine they were resolved for
    assert {
        "trainer/precision",
        "module/channels_last",
        "machine/isa",
        "machine/cpu",
    } <= hparam_names
    assert "machine/native_bf16" in hparam_names
    final = acc.Scalars("test/acc")[-1].value
    assert final == pytest.approx(read_metrics(tb_run)["test/acc"], abs=1e-6)


@pytest.mark.slow  # eval / sweep subprocesses
def test_report_ranks_the_four_jobs(multirun_dir, tmp_path):
    rows = report_main([str(multirun_dir), "--out", str(tmp_path)])
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    accs = [r["test_acc"] for r in rows]
    assert accs == sorted(accs, reverse=True)
    for row in rows:
        m = read_metrics(multirun_dir / row["job"])
        assert (row["model"], row["optimizer"], row["scheduler"]) == (
            m["model"],
            m["optimizer"],
            m["scheduler"],
        )
        assert row["test_acc"] == m["test/acc"] and row["val_acc_best"] == m["val/acc_best"]
        assert row["params"] == m["params"] and row["train_seconds"] == m["train_seconds"]
        assert f"model={m['model']}" in row["overrides"]
    with (tmp_path / "summary.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (tmp_path / "summary.md").read_text().count("| ok |") == 4
    _png(tmp_path / "summary.png")
    # the Hydra callback wrote the same summary into the sweep directory itself
    assert (multirun_dir / "summary.md").read_text() == (tmp_path / "summary.md").read_text()


@pytest.mark.slow  # eval / sweep subprocesses
def test_failed_job_is_listed_not_fatal(tmp_path):
    proc = run_module(
        "mnist_lab.train",
        "-m",
        "data.val_size=0,5000",
        "debug=tiny",
        "logger=none",
        f"hydra.sweep.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0  # Hydra reports the failed job...
    assert (tmp_path / "1" / "metrics.json").exists()  # ...after running the others
    assert "data.val_size" in (tmp_path / "0" / "error.txt").read_text()
    rows = report_main([str(tmp_path)])
    assert [(r["job"], r["status"]) for r in rows] == [("1", "ok"), ("0", "failed")]
    assert "data.val_size must be between" in (tmp_path / "summary.md").read_text()
