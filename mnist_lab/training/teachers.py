"""Distillation teachers (``experiment=distilled``): an ensemble of kept preset runs, made when
they are missing and the run is a short one.

The default teachers are the three ``best`` runs that ``python -m mnist_lab.bench accuracy
--presets best --seeds 3`` keeps in ``logs/bench/accuracy/best/seed{0,1,2}`` (~24 min each on a
2-core CPU). A fresh checkout has none:

- a *short* run (``trainer.fast_dev_run`` or ``trainer.limit_train_batches`` set: smoke tests,
  ``debug=tiny``, ``experiment=glob(*)`` checks) trains tiny teachers instead, ``debug=tiny``
  runs of the same preset cut to 4 batches, kept in ``logs/teachers/tiny/`` (seconds each,
  reused next time);
- a full run stops before training with the command that makes the real ones, or trains them
  itself with ``module.teacher.build=true``.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from mnist_lab.errors import ConfigError
from mnist_lab.models.ensemble import EnsembleNet
from mnist_lab.training.checkpoint import load_ensemble
from mnist_lab.training.kept_runs import RUNS_DIR, finished_run, run_dir, run_seed

log = logging.getLogger(__name__)
# What a tiny teacher adds to its preset: debug=tiny (conf/debug/tiny.yaml) cut to 4 training
# batches and one validation and test batch: ~2 s on a 2-core CPU, not ~4 s.
TINY = ["debug=tiny", "trainer.limit_train_batches=4"]
TINY += ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def preset_ensemble(
    preset: str = "best",
    seeds: Sequence[int] = (0, 1, 2),
    runs_dir: str = "logs/bench/accuracy",
    tiny_runs_dir: str = "logs/teachers/tiny",
    short_run: bool = False,
    build: bool = False,
    ckpts: Sequence[str] | None = None,
) -> EnsembleNet:
    """The teacher: the ensemble of ``preset``'s kept runs ``seeds`` (or of ``ckpts``, when
    given: checkpoints, run or multirun directories of your own, used as they are).

    Missing runs are trained here when ``short_run`` (tiny ones, into ``tiny_runs_dir``) or
    ``build`` (full ones, into ``runs_dir``, where ``bench accuracy`` reuses them); otherwise
    a :class:`ConfigError` names the command that makes them.
    """
    if ckpts:
        return load_ensemble(list(ckpts))
    folder, extra = (tiny_runs_dir, TINY) if short_run else (runs_dir, [])
    missing = [s for s in seeds if finished_run(preset, s, folder, extra)[0] is None]
    if missing and not (short_run or build):
        where = ", ".join(str(run_dir(folder, preset, s)) for s in missing)
        runs = "" if Path(folder).resolve() == RUNS_DIR.resolve() else f" --runs {folder}"
        command = f"python -m mnist_lab.bench accuracy --presets {preset} --seeds {max(seeds) + 1}"
        raise ConfigError(
            f"distillation needs its teachers, `{preset}` runs with seeds "
            f"{list(seeds)}, and {len(missing)} are missing ({where}). Make them with "
            f"`{command}{runs}` "
            "(full runs, each on a 2-core CPU: ~24 min for best, ~1 min for fast; "
            "docs/benchmarks.md), or add "
            "module.teacher.build=true to train them in this run, or give your own with "
            "module.teacher.ckpts=[RUN_DIR,...]"
        )
    if missing:
        kind = "tiny (debug=tiny, 4 batches: seconds each)" if short_run else "full"
        log.info(
            "distillation: training %d missing %s teacher(s) `%s` seeds %s into %s%s",
            len(missing),
            kind,
            preset,
            missing,
            folder,
            "" if short_run else " (each a whole preset run: ~24 min for best, ~1 min for fast)",
        )
    ckpt_paths = []
    for seed in seeds:
        start = time.perf_counter()
        with _seeds_kept():  # building teachers must not change the student's start
            metrics = run_seed(preset, seed, Path(folder), extra, say=log.info)
        if seed in missing:
            took = time.perf_counter() - start
            log.info("distillation: teacher seed %d trained in %.1f s", seed, took)
        ckpt_paths.append(str(metrics["best_ckpt"]))
    return load_ensemble(ckpt_paths)


@contextmanager
def _seeds_kept() -> Iterator[None]:
    """Python, numpy and torch random state, and the seed Lightning hands to DDP ranks, as they
    were: the student's net is drawn after its teacher is built, and must not depend on
    whether the teacher had to be."""
    state = random.getstate(), np.random.get_state()
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    with torch.random.fork_rng():
        yield
    random.setstate(state[0])
    np.random.set_state(state[1])
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
