"""MLflow and W&B beside TensorBoard and CSV, read back with the trackers' own clients.

``multirun_dir`` (conftest) is a real 4-job ``python -m mnist_lab.train -m`` sweep logged to
TensorBoard, MLflow and W&B (offline) at once: each job must be its own run in every tracker, with
the job's config, its curves and the final metrics its ``metrics.json`` holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from lightning.fabric.utilities.imports import RequirementCache
from omegaconf import OmegaConf

from mnist_lab.config import instantiate_group
from mnist_lab.errors import ConfigError
from mnist_lab.evaluation.run_logs import mlflow_curves, read_epoch_curves, wandb_curves, wandb_rows
from tests.helpers import compose_cfg, free_port, read_metrics, train_in_process, wait_for

FINAL = ("test/acc", "test/loss", "val/acc_best")
BIN = Path(sys.executable).parent  # the venv's mlflow and wandb commands


def _jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())


def _ref(job: Path, tracker: str) -> dict[str, str]:
    refs = [r for r in read_metrics(job)["trackers"] if r["tracker"] == tracker]
    assert len(refs) == 1, read_metrics(job)["trackers"]
    return refs[0]


@pytest.mark.slow  # the sweep fixture runs 4 trainings in a subprocess
def test_mlflow_search_runs_finds_every_job_with_its_metrics_params_and_checkpoint(multirun_dir):
    from mlflow import MlflowClient

    uri = _ref(_jobs(multirun_dir)[0], "mlflow")["tracking_uri"]
    assert uri == f"sqlite:///{multirun_dir}_logs/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mnist_lab")
    by_id = {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}
    assert len(by_id) == 4  # one run per job, not one run for the whole sweep
    for job in _jobs(multirun_dir):
        metrics = read_metrics(job)
        run = by_id[_ref(job, "mlflow")["run_id"]]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == job.name  # its directory (under logs/: train/multiruns/...)
        for key in FINAL:
            assert run.data.metrics[key] == pytest.approx(metrics[key], abs=1e-6), key
        params, job_cfg = run.data.params, OmegaConf.load(job / ".hydra" / "config.yaml")
        assert params["model/_target_"] == job_cfg.model._target_
        assert params["optimizer/_target_"] == job_cfg.optimizer._target_
        assert params["trainer/limit_train_batches"] == "20"  # debug=tiny, flattened
        assert run.data.tags["best_ckpt"] == metrics["best_ckpt"]
        assert Path(run.data.tags["output_dir"]) == job
        # step metrics every 5 steps of 20, epoch metrics once
        assert len(client.get_metric_history(run.info.run_id, "train/loss_step")) == 4
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 1
        figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures/val")}
        assert figures == {"figures/val/confusion_matrix", "figures/val/errors"}


@pytest.mark.slow  # starts the MLflow server
def test_mlflow_ui_serves_the_store(multirun_dir):
    """The README's ``mlflow ui --backend-store-uri sqlite:///...`` on the sweep's store."""
    uri = _ref(_jobs(multirun_dir)[0], "mlflow")["tracking_uri"]
    port = free_port()
    ui = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", uri, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the server's workers stop with it
    )
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        experiment = wait_for(f"{api}/experiments/get-by-name?experiment_name=mnist_lab", ui, 90)
        experiment_id = experiment.json()["experiment"]["experiment_id"]
        runs = httpx.post(f"{api}/runs/search", json={"experiment_ids": [experiment_id]}).json()
        assert len(runs["runs"]) == 4
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # the web page
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


@pytest.mark.slow
def test_wandb_offline_run_directory_holds_every_job(multirun_dir):
    run_ids = set()
    for job in _jobs(multirun_dir):
        metrics = read_metrics(job)
        ref = _ref(job, "wandb")
        offline = Path(ref["dir"])
        assert offline.parent == job / "wandb" and offline.name.startswith("offline-run-")
        assert offline.name.endswith(ref["run_id"])  # what `wandb sync` is given
        assert (offline / f"run-{ref['run_id']}.wandb").stat().st_size > 0
        run_ids.add(ref["run_id"])
        config = {k: v for row in wandb_rows(offline, "config") for k, v in row.items()}
        job_cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert config["model"]["_target_"] == job_cfg.model._target_
        assert config["optimizer"]["_target_"] == job_cfg.optimizer._target_
        assert config["seed"] == 42
        summary = {k: v for row in wandb_rows(offline, "summary") for k, v in row.items()}
        for key in FINAL:
            assert summary[key] == pytest.approx(metrics[key], abs=1e-6), key
        assert summary["best_ckpt"] == metrics["best_ckpt"]
        images = [k for row in wandb_rows(offline, "history") for k in row if "/_type" in k]
        assert "val/confusion_matrix/_type" in images
        # the directory `wandb sync` uploads later (checked without uploading)
        sync = subprocess.run(
            [str(BIN / "wandb"), "sync", "--dry-run", str(offline)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Would sync 1 run(s)" in sync.stdout + sync.stderr, sync.stderr
    assert len(run_ids) == 4  # each job finished its run; none logged into the previous one


@pytest.mark.slow
def test_every_logger_holds_the_same_curves(multirun_dir):
    job = _jobs(multirun_dir)[-1]
    from_tensorboard = read_epoch_curves(job)  # TensorBoard's events are read first
    assert all(len(points) == 1 for points in from_tensorboard.values()), from_tensorboard
    mlflow = _ref(job, "mlflow")
    expected = pytest.approx(_flat(from_tensorboard))
    assert _flat(mlflow_curves(mlflow["tracking_uri"], mlflow["run_id"])) == expected
    assert _flat(wandb_curves(Path(_ref(job, "wandb")["dir"]))) == expected


def _flat(curves: dict[str, list[tuple[int, float]]]) -> dict[tuple[str, int], float]:
    return {(name, epoch): value for name, points in curves.items() for epoch, value in points}


def test_mlflow_only_run_keeps_its_curves_in_the_store(tmp_path):
    """``logger=mlflow`` alone: eval's curves come from the store, found via metrics.json."""
    run_dir = tmp_path / "run"
    metrics = train_in_process(
        ["debug=tiny", "logger=mlflow", f"paths.log_dir={tmp_path}"], run_dir
    )
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    assert not (run_dir / "tensorboard").exists() and not (run_dir / "csv").exists()
    (ref,) = metrics["trackers"]
    assert json.loads((run_dir / "metrics.json").read_text())["trackers"] == [ref]
    curves = read_epoch_curves(run_dir)
    assert [epoch for epoch, _ in curves["val/acc"]] == [0]
    assert curves["val/acc"][0][1] == pytest.approx(metrics["val/acc_best"])


def test_tensorboard_runs_name_no_external_tracker(tb_run):
    assert read_metrics(tb_run)["trackers"] == []


def test_a_tracker_that_is_not_installed_is_one_clear_error(tmp_path, monkeypatch):
    import lightning.pytorch.loggers.wandb as lightning_wandb

    # what Lightning checks before it imports wandb: here a package that does not exist
    monkeypatch.setattr(lightning_wandb, "_WANDB_AVAILABLE", RequirementCache("wandb-absent>=1"))
    cfg = compose_cfg(["logger=[tensorboard,wandb]"], tmp_path)
    with pytest.raises(ConfigError) as err:
        instantiate_group(cfg.logger)
    message = str(err.value)
    assert "`wandb` (lightning.pytorch.loggers.WandbLogger)" in message
    assert "wandb-absent" in message and "pip install -e '.[trackers]'" in message
