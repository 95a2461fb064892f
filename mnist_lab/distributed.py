"""DDP inside Hydra: one run directory and one process group per job, sweeps included.

Lightning's DDP (``strategy=ddp``, its "popen" launcher) starts ranks >= 1 by re-running the
launching command line with ``hydra.run.dir`` set to Hydra's *run* directory. Inside a multirun
that breaks in three ways, the bugs users of the usual templates report: the command line is
the whole sweep (``-m model=a,b``), so every child starts a sweep of its own in new
directories; Lightning leaves its rendezvous variables (``LOCAL_RANK``, ``MASTER_PORT``, ...)
and a reduced thread count in the launching process, so the next job believes an outside
launcher made its processes and waits for ranks that never come; and a child that exits with
an error makes Lightning's process observer kill the launching process, the whole sweep with
it. :func:`hydra_job_scope` points the re-launch at the current job as a single run, marks the
children as part of a sweep (:func:`in_sweep_child`), and cleans up after the job: it waits
for the job's ranks to exit before the next job starts (a rank still tearing down while rank 0
closed its process group could abort, and the observer would then kill the next job). Under
torchrun or SLURM (variables set from outside) it changes nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

log = logging.getLogger(__name__)
# Set for the ranks >= 1 of a sweep job: they report errors to rank 0, never by exit status.
SWEEP_CHILD = "MNIST_LAB_SWEEP_CHILD"
# What Lightning's launcher, cluster environment and thread set-up change in the launching process.
SAVED_VARIABLES = (
    "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS",
    SWEEP_CHILD,
)  # fmt: skip
# Hydra's command-line flags that take a value: kept for the children, like every flag.
VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def in_sweep_child() -> bool:
    """True in a DDP rank >= 1 that Lightning started for one job of a Hydra sweep (a single
    run with the sweep's mark; the launching rank 0 is the multirun itself)."""
    return (
        os.environ.get(SWEEP_CHILD) == "1"
        and HydraConfig.initialized()
        and HydraConfig.get().mode == RunMode.RUN
    )


def _single_job_argv(argv: list[str], task_overrides: list[str]) -> list[str]:
    """The sweep's command line as a single run of one job: flags kept (but ``-m``), the
    sweep's overrides replaced by the job's, and ``hydra.mode=RUN`` in case a config (such as
    ``hparams_search=optuna``) switches to multirun itself."""
    kept, words = [], iter(argv[1:])
    for word in words:
        if word in ("-m", "--multirun"):
            continue
        if word.startswith("-"):
            kept.append(word)
            if word in VALUE_FLAGS:
                kept.append(next(words, ""))
    return [argv[0], *kept, *task_overrides, "hydra.mode=RUN"]


@contextmanager
def hydra_job_scope() -> Iterator[None]:
    """Run one Hydra job so that DDP ranks >= 1 re-run exactly this job, in its directory."""
    if not HydraConfig.initialized():
        yield
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, threads = list(sys.argv), torch.get_num_threads()
    observers_before = _observers()
    saved_env = {k: os.environ.get(k) for k in SAVED_VARIABLES}
    launches_ranks = saved_env["LOCAL_RANK"] is None  # no torchrun/SLURM: Lightning starts them
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # Lightning appends hydra.run.dir=<run.dir> and hydra.output_subdir=null.
        sys.argv = _single_job_argv(sys.argv, list(hydra_cfg.overrides.task))
        # HydraConfig.get() is typed as the HydraConf dataclass; at runtime it is a DictConfig.
        with read_write(cast(DictConfig, hydra_cfg.run)):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
        os.environ[SWEEP_CHILD] = "1"  # children copy this process's environment
    try:
        yield
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
        for observer in _observers() - observers_before:
            _wait_for_ranks(observer)
        if launches_ranks and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the next job builds its own group on a new port


def _observers() -> set[threading.Thread]:
    """Lightning's watchdog threads, one per launch: each polls the ranks it started and kills
    the launching process (this sweep) when one exits with an error."""
    return {t for t in threading.enumerate() if t.name == "child-process-observer"}


def _wait_for_ranks(observer: threading.Thread, timeout: float = 120) -> None:
    """Let the job's ranks >= 1 finish exiting, and retire the job's watchdog: the job is over,
    so a rank that fails while shutting down is reported, not a reason to kill the next job."""
    observer._finished = True  # type: ignore[attr-defined]  # Lightning's loop flag
    procs: list[subprocess.Popen] = getattr(observer, "_child_processes", [])
    for rank, proc in enumerate(procs, start=1):
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code:
            log.warning(
                "DDP rank %d (pid %d) exited with code %s after its job", rank, proc.pid, code
            )
