"""Runs of a preset kept in a folder and reused: ``<runs_dir>/<preset>/seed<N>``.

Training one (preset, seed) writes its checkpoint and, last, ``bench_run.json``; a later call
reuses the finished run when the config its checkpoint stores is the one it would train today,
and otherwise trains it again (the old run moved aside, never deleted). ``bench accuracy``
keeps its hour-long runs this way, and ``experiment=distilled`` finds (or builds) its teachers
with the same function, so the two share the runs.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

from mnist_lab.config import compose_train_config
from mnist_lab.paths import PROJECT_ROOT
from mnist_lab.training.checkpoint import run_config
from mnist_lab.training.hardware import AUTO

RUNS_DIR = PROJECT_ROOT / "logs" / "bench" / "accuracy"
DONE = "bench_run.json"  # written last: a folder without it is an unfinished run


# What only watches a run (loggers, figures, progress) cannot change its weights.
OBSERVERS = ("logger", "callbacks.figures", "callbacks.progress_bar", "callbacks.lr_monitor")


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved run config as dotted key -> value, without the machine-specific paths (the
    ``paths`` group and any value that contains one of them) and the observers."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(config, "")
    paths = [str(v) for k, v in flat.items() if k.startswith("paths.") and v]
    return {
        k: v
        for k, v in flat.items()
        if not k.startswith(("paths.", *OBSERVERS))
        and not (isinstance(v, str) and any(p in v for p in paths))
    }


def config_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> list[str]:
    """What differs between the config a run trained with and today's, as ``key: old -> new``.

    A key the code gained since the run is a change only when today's value differs from that
    key's default in ``defaults`` (the config without the preset): new options default to the
    old behaviour (a stage's chance 0, a feature off), so adding one retrains nothing, but a
    preset that turns one on trains something the old run did not. Keys ``defaults`` lacks
    (another model's options) are not changes. ``auto`` (precision, memory layout) matches what
    the hardware resolved it to then; the table lists each seed's precision and machine class.
    """
    before, after = settings(old), settings(new)
    base = settings(defaults) if defaults is not None else {}
    changed = [
        f"{k}: {before[k]!r} -> {after.get(k, '<removed>')!r}"
        for k in before
        if after.get(k, "<removed>") not in (before[k], AUTO)
    ]
    gained = [
        f"{k}: <not in the run; default {base[k]!r}> -> {after[k]!r}"
        for k in after
        if k not in before and k in base and after[k] not in (base[k], AUTO)
    ]
    return changed + gained


def runs_root(runs_dir: str | Path | None, quick: bool, tmp: str | Path) -> Path:
    """Where a benchmark keeps its runs: the folder given, else ``tmp`` for ``--quick`` (tiny
    runs never touch the real ones), else RUNS_DIR."""
    return Path(runs_dir) if runs_dir else Path(tmp) if quick else RUNS_DIR


def run_dir(runs_dir: str | Path, preset: str, seed: int) -> Path:
    return Path(runs_dir) / preset / f"seed{seed}"


def finished_run(
    preset: str, seed: int, runs_dir: str | Path, extra: Sequence[str] = ()
) -> tuple[dict[str, Any] | None, list[str]]:
    """The metrics of the finished run of (preset, seed) that trained with today's config, or
    None and what changed since (``key: old -> new``; empty when there is no finished run)."""
    out = run_dir(runs_dir, preset, seed)
    done = out / DONE
    if not done.exists():
        return None, []
    metrics = json.loads(done.read_text())["metrics"]
    ckpt = metrics.get("best_ckpt")
    if not ckpt or not Path(ckpt).exists():
        return None, ["its checkpoint is gone"]
    cfg = compose_train_config(_overrides(preset, seed, extra), out)
    defaults = compose_train_config([f"seed={seed}"], out)  # the code's defaults: no preset
    changes = config_changes(
        run_config(ckpt),
        cast(dict, OmegaConf.to_container(cfg, resolve=True)),
        cast(dict, OmegaConf.to_container(defaults, resolve=True)),
    )
    return (None if changes else metrics), changes


def _overrides(preset: str, seed: int, extra: Sequence[str]) -> list[str]:
    return [f"experiment={preset}", f"seed={seed}", "logger=none", *extra]


def run_seed(
    preset: str,
    seed: int,
    runs_dir: Path,
    extra: Sequence[str] = (),
    fresh: bool = False,
    say: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train ``preset`` with ``seed`` into ``runs_dir/preset/seedN``, or reuse the finished run
    there when it trained with today's config (the one its checkpoint stores). Returns the
    run's metrics; ``say`` reports what it does (print, or a logger's info)."""
    from mnist_lab.training.fit import train  # Lightning: only when a run trains

    out = run_dir(runs_dir, preset, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    # One process trains a run at a time (parallel sweep jobs that need the same teachers): the
    # others wait here, then reuse it.
    with out.with_name(out.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = out / DONE
        metrics, changes = (None, []) if fresh else finished_run(preset, seed, runs_dir, extra)
        if metrics is not None:
            say(f"{preset} seed {seed}: reusing the finished run in {out}")
            return {**metrics, "reused": True}
        if out.exists():  # unfinished, changed or --fresh: keep a finished run aside
            if done.exists():
                old_dir = out.with_name(
                    f"{out.name}.old{len(list(out.parent.glob(out.name + '.old*')))}"
                )
                out.rename(old_dir)
                why = "; ".join(changes) or "--fresh or its checkpoint is gone"
                say(f"{preset} seed {seed}: retraining ({why}); old run in {old_dir}")
            else:
                shutil.rmtree(out)
        say(f"{preset} seed {seed}: training into {out}")
        overrides = _overrides(preset, seed, extra)
        metrics = train(compose_train_config(overrides, out))
        done.write_text(json.dumps({"overrides": overrides, "metrics": metrics}) + "\n")
    return metrics
