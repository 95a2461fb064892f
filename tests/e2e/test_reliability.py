"""Reliability: exact resume after SIGKILL, reproducibility, config errors, divergence."""

from __future__ import annotations

import gzip
import os
import pickle
import random
import re
import signal
import time

import pytest
import torch

from mnist_lab.data.datamodule import MNISTDataModule
from mnist_lab.data.files import RESOURCES
from mnist_lab.errors import ConfigError, MNISTDataError
from mnist_lab.training.checkpoint import load_checkpoint
from tests.helpers import Pickled, read_metrics, run_module, start_module, train_in_process

# A small but real run: CNN with dropout (global RNG), augmentation (seeded per batch),
# OneCycle, 3 epochs of 20 batches, last.ckpt also every 5 steps, deterministic kernels.
RUN = [
    "model=cnn",
    "model.widths=[8,16,32]",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=5",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=5",
    "callbacks.last_checkpoint.every_n_train_steps=5",
    "callbacks.figures=null",
    "seed=7",
]
EXACT = ("test/acc", "test/loss", "val/acc_best", "epochs", "global_steps", "params")


def weights(ckpt) -> dict[str, torch.Tensor]:
    return load_checkpoint(ckpt)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    run_module("mnist_lab.train", *RUN, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.mark.slow  # training subprocesses
@pytest.mark.parametrize(
    ("kill", "where"),
    [("+callbacks.kill.step=13", "mid-epoch"), ("+callbacks.kill.epoch=2", "between epochs")],
)
def test_sigkill_then_resume_ends_exactly_like_an_uninterrupted_run(
    uninterrupted, tmp_path, kill, where
):
    run_dir = tmp_path / "run"
    killed = run_module(
        "mnist_lab.train",
        *RUN,
        "+callbacks.kill._target_=tests.helpers.KillAt",
        kill,
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists()
    saved = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == (10 if where == "mid-epoch" else 40)

    resumed = run_module("mnist_lab.train", *RUN, "ckpt_path=last", f"hydra.run.dir={run_dir}")
    assert resumed.stdout.strip().splitlines()[-1].startswith("test/acc: ")
    got, want = read_metrics(run_dir), read_metrics(uninterrupted)
    assert {k: got[k] for k in EXACT} == {k: want[k] for k in EXACT}
    a, b = (
        weights(run_dir / "checkpoints" / "last.ckpt"),
        weights(uninterrupted / "checkpoints" / "last.ckpt"),
    )
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # One checkpoint folder, no versioned copies; one TensorBoard run, continued.
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in names and not any(re.search(r"-v\d+\.ckpt$", n) for n in names), names
    versions = [p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()]
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert not versions and len(events) >= 2, (versions, events)


@pytest.mark.slow  # training subprocesses
def test_same_seed_same_numbers_and_weights(uninterrupted, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    run_module("mnist_lab.train", *RUN, f"hydra.run.dir={again}")
    run_module("mnist_lab.train", *RUN, "seed=8", f"hydra.run.dir={other}")
    first, second, third = (read_metrics(d) for d in (uninterrupted, again, other))
    assert {k: first[k] for k in EXACT} == {k: second[k] for k in EXACT}
    a, b = (
        weights(uninterrupted / "checkpoints" / "last.ckpt"),
        weights(again / "checkpoints" / "last.ckpt"),
    )
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first["test/loss"] != third["test/loss"]


@pytest.mark.slow  # training subprocesses
def test_resume_without_a_checkpoint_is_refused(tmp_path):
    proc = run_module("mnist_lab.train", "ckpt_path=last", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "ckpt_path=last" in proc.stderr and "hydra.run.dir" in proc.stderr


@pytest.mark.slow  # training subprocesses
def test_last_checkpoint_follows_every_epoch_not_only_new_bests(tmp_path):
    """lr=0: validation accuracy never improves after epoch 0, yet last.ckpt (what
    ckpt_path=last resumes from) must hold the final epoch, not the best one."""
    run_module(
        "mnist_lab.train",
        "optimizer.lr=0.0",
        "scheduler=none",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "logger=none",
        "callbacks.figures=null",
        f"hydra.run.dir={tmp_path}",
    )
    ckpts = tmp_path / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)
    best = list(ckpts.glob("epoch*.ckpt"))
    assert len(best) == 1 and best[0].name.startswith("epoch000")  # the best stayed epoch 0


@pytest.mark.slow  # training subprocesses
def test_divergence_stops_at_the_first_nonfinite_loss(tmp_path):
    proc = run_module(
        "mnist_lab.train",
        "optimizer.lr=1e6",
        "scheduler=none",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=40",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "training diverged" in proc.stderr and "Lower the learning rate" in proc.stderr
    step = int(proc.stderr.split(" at step ")[1].split()[0])
    assert not (tmp_path / "metrics.json").exists()
    # The first step starts from the initial weights, so its loss is finite: the run breaks
    # later, and the last good state was kept, finite.
    assert step > 1, proc.stderr[-3000:]
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == step - 1  # the state before the step that broke
    net = {k: v for k, v in saved["state_dict"].items() if k.startswith("net.")}
    assert net and all(torch.isfinite(v).all() for v in net.values())


@pytest.mark.slow  # training subprocesses
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=resnet50"], ["Could not find 'model/resnet50'", "Available options", "lenet"]),
        (["optimizer=adamm"], ["Could not find 'optimizer/adamm'", "sgd", "adamw"]),
        (["scheduler=cosin"], ["Could not find 'scheduler/cosin'", "onecycle"]),
        (["trainer.max_epoch=3"], ["trainer.max_epoch", "not in struct"]),
        (["data.batch_size=0"], ["data.batch_size=0 must be a positive"]),
    ],
)
def test_config_errors_are_one_short_message(overrides, expected, tmp_path):
    """What a user sees from the command line: Hydra's composition errors and ours alike."""
    proc = run_module(
        "mnist_lab.train", *overrides, f"hydra.run.dir={tmp_path}", check=False, full_error=False
    )
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    for text in expected:
        assert text in out, out[-3000:]
    assert len(out.splitlines()) < 25, out  # one message, not a wall of traceback


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["scheduler=plateau", "trainer.limit_val_batches=0"],
            ["watches val/acc", "validation is off"],
        ),
        (
            ["callbacks=early_stopping", "trainer.limit_val_batches=0"],
            ["early_stopping needs validation"],
        ),
        (
            ["trainer.precision=16-mixed", "trainer.accelerator=cpu"],
            ["16-mixed needs a GPU", "bf16-mixed"],
        ),
        (["trainer.precision=fp16"], ["trainer.precision=fp16 is not a precision", "auto"]),
        (["module.channels_last=off"], ["module.channels_last=off", "true or false"]),
        (["trainer=gpu"], ["torch sees no CUDA GPU", "trainer=cpu"]),
    ],
)
def test_impossible_configs_are_refused_before_anything_runs(
    overrides, expected, tmp_path, monkeypatch
):
    """``train(cfg)`` in-process (the command line's one-line rendering of a ConfigError is
    tested above and in test_errors.py): refused before data loads or a file is written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    with pytest.raises(ConfigError) as refused:
        train_in_process(overrides, tmp_path / "run")
    for text in expected:
        assert text in str(refused.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # training subprocesses
def test_random_sigkills_never_leave_a_corrupt_last_checkpoint(tmp_path):
    """Checkpoints are written to a temporary file and renamed (Lightning's fsspec transaction):
    killed at random moments while it saves every step, last.ckpt always loads, and the run
    resumes from it each time."""

    args = [
        "model=mlp",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=400",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "callbacks.figures=null",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
    ]
    last = tmp_path / "checkpoints" / "last.ckpt"
    rng = random.Random(0)
    steps = []
    for attempt in range(3):
        resume = ["ckpt_path=last"] if attempt else []
        before = last.stat().st_mtime_ns if last.exists() else 0
        proc = start_module("mnist_lab.train", *args, *resume, log_dir=tmp_path / f"try{attempt}")
        deadline = time.monotonic() + 120
        while not (last.exists() and last.stat().st_mtime_ns != before):
            assert proc.is_alive() and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.5))  # somewhere in a stream of per-step saves
        proc.kill()
        proc.join()
        steps.append(load_checkpoint(last)["global_step"])  # raises if the file were corrupt
    assert steps == sorted(steps) and steps[-1] > steps[0], steps  # each resume made progress


def _extracted_raw(datamodule, dest):
    """A data dir holding the extracted IDX files (no .gz): the header and count checks guard
    these, as the md5 check guards the .gz downloads."""

    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, _ in RESOURCES:
        (raw / name[:-3]).write_bytes(gzip.decompress((datamodule.raw_dir / name).read_bytes()))
    return raw


def test_bad_idx_header_is_refused_by_name(datamodule, tmp_path):
    raw = _extracted_raw(datamodule, tmp_path)
    images = raw / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[2:4] = b"\x0d\x03"  # float data instead of unsigned bytes
    images.write_bytes(bytes(data))
    with pytest.raises(MNISTDataError, match=r"train-images-idx3-ubyte is not an MNIST IDX file"):
        MNISTDataModule(data_dir=str(tmp_path), download=False).setup()


def test_wrong_image_count_is_refused_by_name(datamodule, tmp_path):
    raw = _extracted_raw(datamodule, tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-500])  # 500 labels short
    with pytest.raises(MNISTDataError, match=r"t10k-labels-idx1-ubyte holds 9500 bytes"):
        MNISTDataModule(data_dir=str(tmp_path), download=False).setup()
    proc = run_module(
        "mnist_lab.train", f"data.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "t10k-labels-idx1-ubyte holds 9500 bytes" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


@pytest.mark.slow  # training subprocesses
def test_resuming_a_malicious_checkpoint_is_refused_not_executed(tmp_path):
    marker = "/tmp/mnist_lab_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        {"state_dict": {}, "x": Pickled()}, tmp_path / "checkpoints" / "last.ckpt",
        pickle_module=pickle,
    )  # fmt: skip
    proc = run_module("mnist_lab.train", "ckpt_path=last", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1 and "Refusing to resume" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(marker)
