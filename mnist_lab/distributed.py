"""DDP inside Hydra: one run directory and one process group per job, sweeps included.

Lightning's DDP (``strategy=ddp``, its "popen" launcher) starts ranks >= 1 by re-running the
launching command line with ``hydra.run.dir`` set to Hydra's *run* directory. Inside a multirun
that breaks in two ways, the bugs users of the usual templates report: the command line is the
whole sweep (``-m model=a,b``), so every child starts a sweep of its own in new directories; and
the launcher leaves its rendezvous variables (``LOCAL_RANK``, ``MASTER_PORT``, ...) in the
process environment, so the next job believes an outside launcher made its processes and waits
for ranks that never come. :func:`hydra_job_scope` points the re-launch at the current job and
cleans up after it. Under torchrun or SLURM (variables set from outside) it changes nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

# What Lightning's launcher and cluster environment set in the launching process.
RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def hydra_job_scope() -> Iterator[None]:
    """Run one Hydra job so that DDP ranks >= 1 re-run exactly this job, in its directory."""
    if not HydraConfig.initialized():
        yield
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_env = list(sys.argv), {k: os.environ.get(k) for k in RENDEZVOUS_VARIABLES}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # The children see a single run of this job's overrides in this job's directory
        # (Lightning appends hydra.run.dir=<run.dir> and hydra.output_subdir=null).
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the next job builds its own group on a new port
