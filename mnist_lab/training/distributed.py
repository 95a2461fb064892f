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
children as part of a sweep (:func:`in_sweep_child`), and isolates the job:

- a child rank that fails reports instead of exiting with an error: it writes
  ``error.rank<N>.txt`` into the job's directory and exits 0 (:func:`report_rank_failure`);
  rank 0 then fails at its next collective and the job is recorded as failed with that error
  (:class:`~mnist_lab.errors.RankFailedError`);
- a child that dies anyway (killed, out of memory) makes the observer end that job's ranks,
  never the sweep;
- when rank 0 fails, the job's other ranks are stopped at once (they wait in a collective for
  a rank that is gone); when it succeeds they get time to exit on their own, and the job's
  observer is retired before the next job starts (it would otherwise kill the next job for a
  rank that failed while shutting down).

Under torchrun or SLURM (variables set from outside) it changes nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from mnist_lab import runs
from mnist_lab.errors import MnistLabError, RankFailedError

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


def report_rank_failure(err: BaseException, output_dir: str | Path) -> None:
    """In a DDP child of a sweep job: log the error and leave it for rank 0 in the job's
    directory, instead of exiting with an error (Lightning's observer would kill the sweep)."""
    rank = os.environ.get("LOCAL_RANK", "?")
    log.error("DDP rank %s failed: %s", rank, runs.error_summary(err))
    runs.write_error(output_dir, err, rank=rank)


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
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    output_dir = Path(hydra_cfg.runtime.output_dir)
    if sweep:
        # Lightning appends hydra.run.dir=<run.dir> and hydra.output_subdir=null.
        sys.argv = _single_job_argv(sys.argv, list(hydra_cfg.overrides.task))
        # HydraConfig.get() is typed as the HydraConf dataclass; at runtime it is a DictConfig.
        with read_write(cast(DictConfig, hydra_cfg.run)):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
        os.environ[SWEEP_CHILD] = "1"  # children copy this process's environment
    failed = False
    try:
        with _observers_spare_the_sweep(sweep):
            yield
    except BaseException as err:
        failed = True
        codes = _reap_ranks(_observers() - observers_before, failed=True)
        # Rank 0's own refusal (config, data, divergence) says it best; anything else (a
        # collective broken by a rank that is gone) is explained by that rank's report.
        cause = _rank_failure(output_dir, codes) if sweep else None
        if cause and not isinstance(err, MnistLabError):
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            raise RankFailedError(f"{cause}; rank 0 then stopped with {reason}") from err
        raise
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
        if not failed:
            _reap_ranks(_observers() - observers_before, failed=False)
            if sweep and (cause := _rank_failure(output_dir, {})):
                log.warning("%s, after rank 0 had finished the job", cause)
        if launches_ranks and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the next job builds its own group on a new port


def _rank_failure(output_dir: Path, codes: dict[int, int]) -> str | None:
    """What went wrong on the job's other ranks: the first rank's report, or how it died."""
    reports = runs.rank_errors(output_dir)
    if reports:
        rank, path = reports[0]
        return f"DDP rank {rank} failed: {runs.read_error(path)} (traceback: {path})"
    dead = [f"rank {rank} exited with code {code}" for rank, code in codes.items() if code]
    return f"DDP {', '.join(dead)}" if dead else None


def _observers() -> set[threading.Thread]:
    """Lightning's watchdog threads, one per launch: each polls the ranks it started and kills
    the launching process (this sweep) when one exits with an error."""
    return {t for t in threading.enumerate() if t.name == "child-process-observer"}


@contextmanager
def _observers_spare_the_sweep(sweep: bool) -> Iterator[None]:
    """In a sweep, a rank that dies ends its job's other ranks, not the launching process:
    rank 0 then fails at its next collective and only this job is recorded as failed."""
    if not sweep:
        yield
        return
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    kill_all = _ChildProcessObserver._terminate_all

    def end_the_children(observer: _ChildProcessObserver) -> None:
        for proc in observer._child_processes:
            if proc.poll() is None:
                proc.kill()

    _ChildProcessObserver._terminate_all = end_the_children  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        _ChildProcessObserver._terminate_all = kill_all  # type: ignore[method-assign]


def _reap_ranks(observers: set[threading.Thread], failed: bool) -> dict[int, int]:
    """Retire the job's watchdogs and wait for its ranks >= 1; the exit codes of those that
    ended on their own, by rank.

    The job is over, so a rank that fails while shutting down is reported, not a reason to
    kill the next job. After a failure on rank 0 the others are stopped after a short grace
    (time to write their own report): they would wait in a collective for rank 0 forever.
    """
    codes = {}
    for observer in observers:
        # Lightning's loop runs _run() once more after its sleep even when _finished is set:
        # without processes to watch, that last round finds nothing to kill.
        procs: list[subprocess.Popen] = getattr(observer, "_child_processes", [])
        observer._child_processes = []  # type: ignore[attr-defined]
        observer._finished = True  # type: ignore[attr-defined]
        for rank, proc in enumerate(procs, start=1):
            try:
                codes[rank] = proc.wait(timeout=10 if failed else 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                continue
            if codes[rank] and not failed:
                log.warning(
                    "DDP rank %d (pid %d) exited with code %s after its job",
                    rank,
                    proc.pid,
                    codes[rank],
                )
    return codes
