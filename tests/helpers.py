"""What the tests share: running commands as a user would, composing and training configs
in-process, rendering photos, and test-only callbacks injected into real training
subprocesses with ``+callbacks.x._target_=tests.helpers.KillAt``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lightning as L
import numpy as np
from omegaconf import DictConfig
from PIL import Image

from mnist_lab.config import compose_train_config
from mnist_lab.tools.loadtest import free_port
from mnist_lab.training.hardware import resolve_auto
from tests import warm

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(
    overrides: list[str], output_dir: Path | None = None, resolved: bool = True
) -> DictConfig:
    """The train config as Hydra composes it, with ``paths.output_dir`` set outside a run and
    (``resolved``) ``auto`` precision and layout resolved for this machine, as ``train`` does
    before it builds anything."""
    cfg = compose_train_config(overrides, output_dir or ROOT / "logs" / "test")
    if resolved:
        resolve_auto(cfg)
    return cfg


def train_in_process(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """``python -m mnist_lab.train OVERRIDES`` without a new Python process: the same
    ``train(cfg)``, writing checkpoints and ``metrics.json`` into ``run_dir``. Saves the
    ~10 s interpreter + import start-up of a subprocess; use ``run_module`` when the command
    line, Hydra's run directory (``.hydra/``), resuming or DDP is what is tested."""
    from mnist_lab.training.fit import train

    return train(compose_cfg(overrides, run_dir))


def run_module(
    module: str,
    *args: str,
    cwd: Path = ROOT,
    check: bool = True,
    timeout: int = 600,
    full_error: bool = True,
    cold: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` in a real process; returns the CompletedProcess.
    ``full_error=False`` shows what a user sees (Hydra's short error, no stack trace).
    The process starts warm (``tests.warm``: libraries already imported) unless ``cold=True``
    or this test set an environment variable a library reads at import (tests/warm.py)."""
    with _hydra_full_error(full_error):  # both kinds of start inherit this environment
        if cold or not warm.can_start_warm():
            proc = subprocess.run(
                [sys.executable, "-m", module, *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        else:
            proc = _run_warm(module, list(args), cwd, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@contextlib.contextmanager
def _hydra_full_error(on: bool) -> Iterator[None]:
    before = os.environ.pop("HYDRA_FULL_ERROR", None)
    if on:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        if before is not None:
            os.environ["HYDRA_FULL_ERROR"] = before


def start_module(module: str, *args: str, log_dir: Path, cwd: Path = ROOT):
    """``python -m module args`` started warm and left running, its output in ``log_dir``:
    ``.pid``, ``.is_alive()``, ``.kill()`` (SIGKILL), ``.join()``, ``.exitcode``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out, err = log_dir / "stdout", log_dir / "stderr"
    out.touch()
    err.touch()
    return warm.start(module, list(args), str(cwd), str(out), str(err))


def _stop(proc: Any, grace: float = 0) -> None:
    """SIGTERM and ``grace`` seconds to exit (none: SIGKILL at once), then SIGKILL."""
    if grace:
        proc.terminate()
        proc.join(grace)
    if proc.exitcode is None:
        proc.kill()
        proc.join()


def _run_warm(module: str, args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_module(module, *args, log_dir=Path(tmp), cwd=cwd)
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        proc.join(timeout)
        if proc.exitcode is None:
            _stop(proc)
            raise subprocess.TimeoutExpired([module, *args], timeout, err.read_text())
        return subprocess.CompletedProcess(
            [sys.executable, "-m", module, *args],
            proc.exitcode,
            out.read_text(errors="replace"),
            err.read_text(errors="replace"),
        )


@contextlib.contextmanager
def running_server(
    model: str | None,
    *overrides: str,
    cold: bool = False,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """``python -m mnist_lab.serve ckpt_path=MODEL`` (None: the shipped model) on a free port,
    warm unless ``cold=True``
    (what a user starts; and the only way to see a torch-free ONNX server's own imports and
    memory, tests/test_serve.py; ``env`` and ``log`` are for those); yields its URL once
    ``/health`` answers."""
    if cold:
        from mnist_lab.tools.loadtest import running_server as cold_server

        with cold_server(model, free_port(), *overrides, env=env, log=log) as url:
            yield url
        return
    port = free_port()
    model_args = [f"ckpt_path={model}"] if model is not None else []
    args = [*model_args, f"port={port}", "log_level=warning", *overrides]
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_module("mnist_lab.serve", *args, log_dir=Path(tmp))
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(f"{url}/health", proc, 120, log=Path(tmp) / "stderr")
            yield url
        finally:
            _stop(proc, grace=10)


def wait_for(url: str, proc: Any, seconds: float = 60, log: Path | None = None) -> httpx.Response:
    """The first 200 answer of ``url`` from a server ``proc`` (a ``Popen`` or a warm process)
    is starting; fails, with the end of its ``log``, if it exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        exited = proc.poll() is not None if hasattr(proc, "poll") else not proc.is_alive()
        assert not exited, f"{url}: the server exited" + (
            f":\n{log.read_text()[-3000:]}" if log else ""
        )
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds} s")


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def render_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """An MNIST digit as a phone-photo-like JPEG: ~300x300, black ink on off-white paper,
    off-centre, with sensor noise and JPEG artefacts."""
    side = int(rng.integers(150, 240))
    mask = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    paper = int(rng.integers(190, 245))
    canvas = Image.new("L", (300, 300), paper)
    ink = Image.new("L", (side, side), int(rng.integers(0, 50)))
    x, y = (int(v) for v in rng.integers(0, 300 - side + 1, size=2))
    canvas.paste(ink, (x, y), mask=mask)
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 8, (300, 300))
    buf = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).convert("RGB").save(
        buf, format="JPEG", quality=int(rng.integers(60, 90))
    )
    return buf.getvalue()


class Pickled:
    """An object whose unpickling runs a shell command: what a malicious checkpoint holds."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/mnist_lab_pwned",))


class KillAt(L.Callback):
    """SIGKILL this process, like a crash or the OOM killer: no clean-up, no final save.

    ``step``: just before the training batch that would make ``global_step`` step + 1 (mid-
    epoch); ``epoch``: at the start of that epoch (between epochs, after the previous epoch's
    validation and checkpoint).
    """

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.step is not None and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.epoch is not None and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class Trace(L.Callback):
    """Append one line per training step: global step, batch index, a checksum of the
    (augmented) batch, the loss and a checksum of the weights: two runs compared step by step."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = sum(float(p.detach().double().sum()) for p in pl_module.parameters())
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        with open(self.path, "a") as f:
            x = float(batch[0].double().sum())  # after augmentation: order and augmentation
            f.write(f"{trainer.global_step} {batch_idx} {x:.6f} {loss:.8f} {total:.8f}\n")


class RecordSamples(L.Callback):
    """Write ``samples_rank<R>.txt``: one checksum per training image this DDP rank received
    (un-augmented runs only, so an image's checksum identifies it), to compare ranks' shards."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = batch[0].double().flatten(1)
        ids = [f"{float(v):.6f}" for v in (images * (1 + images.abs())).sum(1)]
        with open(os.path.join(self.out_dir, f"samples_rank{trainer.global_rank}.txt"), "a") as f:
            f.write("\n".join(ids) + "\n")


class FailOnRank(L.Callback):
    """Raise a plain RuntimeError (a bug, not a config mistake) in one DDP rank only, at its
    second training step, in the runs whose ``optimizer.lr`` is ``lr`` (one job of a sweep):
    the other ranks are then left waiting in a collective."""

    def __init__(self, rank: int, lr: float | None = None) -> None:
        self.rank, self.lr = rank, lr

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        lr_matches = self.lr is None or trainer.optimizers[0].defaults["lr"] == self.lr
        if trainer.global_rank == self.rank and trainer.global_step == 1 and lr_matches:
            raise RuntimeError(f"deliberate failure on rank {self.rank}")
