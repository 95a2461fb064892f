"""lightning-hydra-template's own test patterns (its tests/test_train.py and test_sweeps.py),
typed against ``python -m mnist_lab.train``: what a user coming from the template tries first.

Limits are this project's: evaluation batches hold 1,000 images, so a fractional
``limit_val_batches`` must still cover one batch per rank (Lightning refuses ``0.1 * 3 < 1``,
in one line, as a test below shows).
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from hydra.errors import InstantiationException

from mnist_lab.errors import ConfigError
from mnist_lab.evaluation.run_logs import read_epoch_curves
from mnist_lab.training.checkpoint import load_checkpoint
from mnist_lab.training.module import build_module
from tests.helpers import compose_cfg, read_metrics, run_module, train_in_process

pytestmark = pytest.mark.slow  # training runs, sweeps, DDP processes

EXPERIMENTS = sorted(p.stem for p in Path("conf/experiment").resolve().glob("*.yaml"))
QUIET = ["logger=none", "callbacks.figures=null"]
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    *QUIET,
]


def _summary(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "summary.csv").open() as f:
        return {row["job"]: row for row in csv.DictReader(f)}


def _one_error_no_traceback(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if "[ERROR]" in line]


def test_fast_dev_run(tmp_path):
    metrics = train_in_process(["trainer.fast_dev_run=true", *QUIET], tmp_path)
    assert metrics["global_steps"] == 1  # one batch of train, val and test
    assert metrics["test/acc"] is not None


def test_every_experiment_with_fast_dev_run_on_a_fresh_checkout(tmp_path):
    """`experiment=glob(*)` with nothing trained before: `distilled` builds tiny teachers."""
    sweep, logs = tmp_path / "sweep", tmp_path / "logs"
    proc = run_module(
        "mnist_lab.train",
        "-m",
        "experiment=glob(*)",
        "++trainer.fast_dev_run=true",
        f"paths.log_dir={logs}",
        f"hydra.sweep.dir={sweep}",
    )
    rows = _summary(sweep)
    assert sorted(r["overrides"].split("=")[1] for r in rows.values()) == EXPERIMENTS
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert "training 3 missing tiny" in proc.stderr  # said so, what and how big
    for seed in (0, 1, 2):
        assert (logs / "teachers" / "tiny" / "best" / f"seed{seed}" / "bench_run.json").is_file()


def test_a_full_distilled_run_without_teachers_stops_with_the_command_that_makes_them(tmp_path):
    cfg = compose_cfg(["experiment=distilled", f"paths.log_dir={tmp_path}"], tmp_path / "run")
    with pytest.raises(InstantiationException) as err:  # entry_point shows its cause
        build_module(cfg)
    assert isinstance(err.value.__cause__, ConfigError)
    message = str(err.value.__cause__)
    assert "python -m mnist_lab.bench accuracy --presets best --seeds 3" in message
    assert "module.teacher.build=true" in message and "module.teacher.ckpts=" in message
    assert not (tmp_path / "bench").exists()  # nothing trained, nothing written


def test_building_a_teacher_does_not_change_the_students_start(tmp_path):
    """The student's net is drawn after its teacher: the same whether the teacher had to be
    trained first (first build) or was found (second build)."""
    overrides = ["experiment=distilled", "debug=tiny", "module.teacher.seeds=[0]"]
    cfg = compose_cfg([*overrides, f"paths.log_dir={tmp_path}"], tmp_path / "run")
    nets = []
    for _ in range(2):
        L.seed_everything(7)
        nets.append(build_module(cfg).net.state_dict())
    assert (tmp_path / "teachers" / "tiny" / "best" / "seed0" / "bench_run.json").is_file()
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])


def test_validation_twice_per_epoch_and_a_lightning_refusal_in_a_sweep(tmp_path):
    """`trainer.val_check_interval` without a `+`; job 0's value is one Lightning refuses: the
    job is recorded as failed with Lightning's reason in one line, job 1 still runs."""
    proc = run_module(
        "mnist_lab.train",
        "-m",
        "trainer.val_check_interval=500,0.5",
        "debug=tiny",
        "logger=csv",
        "callbacks.figures=null",
        f"hydra.sweep.dir={tmp_path}",
        check=False,
        full_error=False,
    )
    assert proc.returncode == 1  # the sweep says a job failed ...
    errors = _one_error_no_traceback(proc.stderr)  # ... in one line, no traceback
    assert len(errors) == 1 and "Lightning refused trainer.val_check_interval=500" in errors[0]
    rows = _summary(tmp_path)
    assert rows["0"]["status"] == "failed" and rows["1"]["status"] == "ok"
    assert "val_check_interval" in (tmp_path / "0" / "error.txt").read_text().splitlines()[0]
    [log] = (tmp_path / "1" / "csv").rglob("metrics.csv")
    with log.open() as f:
        val_steps = [row["step"] for row in csv.DictReader(f) if row["val/acc"]]
    assert len(val_steps) == 2  # 20 batches (debug=tiny), validated after 10 and 20


def test_ddp_sweep_over_learning_rates_survives_a_failing_rank(tmp_path):
    """The template's DDP-simulated learning-rate sweep, with a bug on rank 1 of job 0 only:
    job 0 is recorded as failed with that rank's error, its ranks are reaped, and job 1 runs
    (no SIGKILL of the sweep); each DDP job is one directory, not a sweep of its own."""
    proc = run_module(
        "mnist_lab.train",
        "-m",
        "trainer=ddp_cpu",
        "model=mlp",
        "optimizer.lr=0.005,0.01",
        *TINY,
        "+callbacks.boom._target_=tests.helpers.FailOnRank",
        "+callbacks.boom.rank=1",
        "+callbacks.boom.lr=0.005",
        f"paths.log_dir={tmp_path}",
        check=False,
        full_error=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # not 137: nothing killed the sweep
    assert "Forcefully terminating" not in proc.stderr
    errors = _one_error_no_traceback(proc.stderr)
    assert any("DDP rank 1 failed: RuntimeError: deliberate failure on rank 1" in e for e in errors)
    [sweep] = (tmp_path / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["multiruns"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    failed = sweep / "0"
    assert not (failed / "metrics.json").exists()
    assert (failed / "error.txt").read_text().startswith("RankFailedError: DDP rank 1 failed")
    assert "deliberate failure" in (failed / "error.rank1.txt").read_text()  # its traceback
    metrics = read_metrics(sweep / "1")
    assert metrics["world_size"] == 2 and "test/acc" in metrics  # the test phase ran
    assert (sweep / "1" / "train_ddp_process_1.log").is_file()
    assert [_summary(sweep)[j]["status"] for j in "01"] == ["failed", "ok"]


def test_optuna_sweep_of_ten_trials_with_five_random_start_up_trials(tmp_path):
    proc = run_module(
        "mnist_lab.train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.sampler.n_startup_trials=5",
        "++trainer.fast_dev_run=true",
        f"hydra.sweep.dir={tmp_path}",
    )
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna"
    assert set(result["best_params"]) == {
        "optimizer",
        "optimizer.lr",
        "optimizer.weight_decay",
        "data.batch_size",
        "model.width_multiplier",
    }
    values = [read_metrics(tmp_path / str(i))["val/acc_best"] for i in range(10)]
    assert result["best_value"] == pytest.approx(max(values))
    assert "sweep summary written to" in proc.stdout


def test_optuna_with_ddp_and_wandb_offline(tmp_path):
    """The template's Optuna + DDP + W&B test, with its tiny limits: a OneCycle schedule of 6
    steps over 2 ranks, which once divided by zero inside torch. One trial (several DDP jobs
    in one sweep: the learning-rate sweep above)."""
    run_module(
        "mnist_lab.train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "trainer=ddp_cpu",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=0.01",
        "trainer.limit_val_batches=0.34",
        "trainer.limit_test_batches=0.2",
        "logger=wandb",
        "callbacks.figures=null",
        f"hydra.sweep.dir={tmp_path}",
    )
    metrics = read_metrics(tmp_path / "0")
    assert metrics["world_size"] == 2 and metrics["epochs"] == 3
    assert list((tmp_path / "0" / "wandb").glob("offline-run-*"))
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(metrics["val/acc_best"])


def test_resume_to_train_longer(tmp_path):
    """1 epoch, then `trainer.max_epochs=2 ckpt_path=last` in the same directory: the OneCycle
    schedule is rebuilt for 2 epochs and continued from where the run was, so the run ends at
    the same learning rate as a plain 2-epoch run and within noise of its accuracy; and, the
    template's check, train/acc and val/acc are higher after the second epoch."""
    base = ["model=mlp", "trainer.limit_train_batches=0.3", "callbacks.figures=null"]
    resumed, plain = tmp_path / "resumed", tmp_path / "plain"
    train_in_process([*base, "trainer.max_epochs=1"], resumed)
    longer = train_in_process([*base, "trainer.max_epochs=2", "ckpt_path=last"], resumed)
    straight = train_in_process([*base, "trainer.max_epochs=2"], plain)

    curves = read_epoch_curves(resumed)
    for name in ("train/acc", "val/acc"):
        (e0, first), (e1, second) = curves[name]
        assert (e0, e1) == (0, 1) and second > first, curves
    schedules = [load_checkpoint(r / "checkpoints" / "last.ckpt") for r in (resumed, plain)]
    a, b = (c["lr_schedulers"][0] for c in schedules)
    assert a["total_steps"] == b["total_steps"] and a["last_epoch"] == b["last_epoch"]
    lr = [c["optimizer_states"][0]["param_groups"][0]["lr"] for c in schedules]
    assert lr[0] == pytest.approx(lr[1], rel=1e-9)
    assert longer["epochs"] == straight["epochs"] == 2
    assert abs(longer["test/acc"] - straight["test/acc"]) < 0.01


def test_trainer_arguments_without_a_plus(tmp_path):
    """Any Trainer argument as typed: here accumulation, clipping and max_steps."""
    trace = tmp_path / "trace.txt"
    overrides = [
        "trainer.max_steps=6",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=0.5",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "+callbacks.trace._target_=tests.helpers.Trace",
        f"+callbacks.trace.path={trace}",
        *QUIET,
    ]
    metrics = train_in_process(overrides, tmp_path / "run")
    assert metrics["global_steps"] == 6
    steps = [int(line.split()[0]) for line in trace.read_text().splitlines()]
    assert steps == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]  # a step every second batch


def test_precision_16_on_a_cpu_is_the_projects_refusal(tmp_path):
    """The project's ConfigError (one message naming the key and the fix on the command line:
    tests/test_errors.py), before anything is written."""
    with pytest.raises(ConfigError, match=r"trainer\.precision=16 needs a GPU.*bf16-mixed"):
        train_in_process(["trainer.precision=16", "trainer.accelerator=cpu"], tmp_path / "run")
    assert not (tmp_path / "run").exists()
