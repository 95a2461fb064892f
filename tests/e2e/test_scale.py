"""Scale-out: DDP with 2 real gloo processes, DDP inside a Hydra multirun, Optuna search,
joblib and SLURM launchers. Every run is a real ``python -m mnist_lab.train`` subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, read_metrics, run_module

pytestmark = pytest.mark.slow  # DDP processes, sweeps, launchers

# A few real steps of a small model: enough to move test accuracy far from chance, so "equal
# accuracy" below compares real predictions.
DDP_RUN = [
    "trainer=ddp_cpu",
    "model=mlp",
    "optimizer=adamw",
    "scheduler=none",
    "data.batch_size=64",
    "data/augment=none",
    "trainer.max_epochs=1",  # the whole test set: single-process eval must reproduce it
    "trainer.limit_train_batches=30",
    "trainer.limit_val_batches=1",
    "logger=none",
    "callbacks.figures=null",
]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path]:
    """One 2-process DDP run; returns (run dir, log root where stray directories would land)."""
    root = tmp_path_factory.mktemp("ddp")
    run_dir = root / "run"
    run_dir.mkdir()
    run_module(
        "mnist_lab.train",
        *DDP_RUN,
        "+callbacks.record._target_=tests.helpers.RecordSamples",
        f"+callbacks.record.out_dir={run_dir}",
        f"paths.log_dir={root / 'logs'}",
        f"hydra.run.dir={run_dir}",
    )
    return run_dir, root


def _ids(path: Path) -> list[str]:
    return path.read_text().split()


def test_ddp_ranks_train_on_disjoint_shards(ddp_run, datamodule):
    run_dir, _ = ddp_run
    rank0, rank1 = _ids(run_dir / "samples_rank0.txt"), _ids(run_dir / "samples_rank1.txt")
    assert len(rank0) == len(rank1) == 30 * 64  # each rank: its own 30 batches of 64
    assert not set(rank0) & set(rank1), "both ranks trained on the same images"
    # The checksums identify images: they are (nearly) unique over the training split and
    # every recorded one is a training image.
    x, _ = datamodule.transform((*datamodule.tensors["train"], 0), train=False)
    flat = x.double().flatten(1)
    train_ids = {f"{float(v):.6f}" for v in (flat * (1 + flat.abs())).sum(1)}
    assert len(train_ids) > 0.99 * len(flat)
    assert set(rank0 + rank1) <= train_ids


def test_ddp_writes_one_run_directory_from_rank_zero(ddp_run):
    run_dir, root = ddp_run
    metrics = read_metrics(run_dir)
    assert metrics["world_size"] == 2
    assert metrics["global_steps"] == 30  # steps per process: 2 x 30 batches in all
    assert metrics["test/acc"] > 0.5
    # No second run directory (the children share this one), one config, one metrics.json.
    assert sorted(p.name for p in root.iterdir()) == ["run"]
    assert not (root / "logs").exists()
    assert len(list(run_dir.rglob("metrics.json"))) == 1
    assert len(list(run_dir.rglob("config.yaml"))) == 1
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran here


def test_ddp_test_accuracy_equals_single_process_eval(ddp_run):
    run_dir, _ = ddp_run
    metrics = read_metrics(run_dir)
    out = run_dir / "single"
    run_module(
        "mnist_lab.eval",
        f"ckpt_path={metrics['best_ckpt']}",
        f"out_dir={out}",
        f"hydra.run.dir={out}",
    )
    single = read_metrics(out)
    # Each rank tested its half of the 10,000 images; the synced result is the whole set's.
    assert single["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert single["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-4)


def test_joblib_launcher_runs_jobs_in_parallel_workers(tmp_path):
    run_module(
        "mnist_lab.train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=mlp,lenet",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        # both workers open one new MLflow store at once: it must be created once, not raced
        "logger=mlflow",
        f"paths.log_dir={tmp_path}/logs",
        "callbacks.figures=null",
        f"hydra.sweep.dir={tmp_path}",
    )
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/logs/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist_lab")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["0", "1"]
    for job in ("0", "1"):
        assert (tmp_path / job / "metrics.json").is_file()
        hydra_cfg = yaml.safe_load((tmp_path / job / ".hydra" / "hydra.yaml").read_text())
        assert "JoblibLauncher" in hydra_cfg["hydra"]["launcher"]["_target_"]
        assert runs[job].data.metrics["test/acc"] == read_metrics(tmp_path / job)["test/acc"]


def test_diverged_trial_does_not_stop_the_search(tmp_path):
    """Both trials diverge at once (lr=1e6): each scores diverged_objective, says why in
    error.txt, and the search still ends with its result file."""
    run_module(
        "mnist_lab.train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "optimizer.lr=choice(1e6)",  # the search space, narrowed to one diverging value
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "logger=none",
        f"hydra.sweep.dir={tmp_path}",
    )
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert result["best_value"] == 0.0 and result["best_params"]["optimizer.lr"] == 1e6
    for job in ("0", "1"):
        assert "diverged" in (tmp_path / job / "error.txt").read_text()


def test_joblib_with_ddp_is_refused_with_the_fix(tmp_path):
    proc = run_module(
        "mnist_lab.train",
        "-m",
        "hydra/launcher=joblib",
        "trainer=ddp_cpu",
        f"hydra.sweep.dir={tmp_path}",
        check=False,
        full_error=False,
    )
    assert proc.returncode != 0
    assert "hydra/launcher=joblib" in proc.stderr and "trainer.devices=1" in proc.stderr


def test_slurm_launcher_composes():
    proc = run_module("mnist_lab.train", "hydra/launcher=slurm", "--cfg", "hydra")
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["tasks_per_node"] == 1 and launcher["gpus_per_node"] == 1
    proc = run_module(
        "mnist_lab.train",
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "hydra.launcher.tasks_per_node=4",
        "hydra.launcher.gpus_per_node=4",
        "--cfg",
        "all",
    )
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["trainer"]["devices"] == 4
    assert cfg["hydra"]["launcher"]["tasks_per_node"] == 4


def test_torchrun_shares_one_run_directory(tmp_path):
    """torchrun starts both ranks (Lightning only joins them); with the README's explicit
    hydra.run.dir both ranks write into one directory and rank 0 writes the results."""
    run_dir = tmp_path / "run"
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mnist_lab.train",
            *DDP_RUN,
            "trainer.limit_train_batches=5",
            "trainer.precision=bf16-mixed",  # mixed precision under DDP too
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    metrics = read_metrics(run_dir)
    assert metrics["world_size"] == 2 and metrics["global_steps"] == 5
    assert proc.stdout.count("test/acc:") == 1  # printed once, by rank 0
