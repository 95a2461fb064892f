"""Hydra glue shared by every entry point: config resolvers and instantiation of keyed groups.

Commands take ``CONFIG_DIR`` from here, not from ``paths``: importing this module registers
the resolvers (``${default_data_dir:}``, ``${run_label:...}`` ...) their configs use."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_lab.errors import ConfigError
from mnist_lab.paths import CONFIG_DIR as CONFIG_DIR  # re-exported for the commands
from mnist_lab.paths import PROJECT_ROOT, SHIPPED_MODEL, default_data_dir


def is_interactive() -> bool:
    """Show live progress bars only to a person at a terminal, never in CI logs or pipes."""
    return sys.stdout.isatty() and not os.environ.get("CI")


def run_label(output_dir: str, log_dir: str) -> str:
    """A run's name in trackers: its directory under ``logs/`` (``train/runs/<time>``)."""
    out, logs = Path(output_dir).resolve(), Path(log_dir).resolve()
    return str(out.relative_to(logs)) if out.is_relative_to(logs) else out.name


def short_run(fast_dev_run: Any, limit_train_batches: Any) -> bool:
    """A run that trains on part of an epoch's batches (``fast_dev_run``, ``debug=tiny``, tiny
    limits): it checks the machinery, so what it needs (distillation teachers) may be tiny too."""
    full = limit_train_batches is None or (
        isinstance(limit_train_batches, float) and limit_train_batches >= 1.0
    )
    return bool(fast_dev_run) or not full


RESOLVERS: dict[str, Callable[..., Any]] = {
    "project_root": lambda: str(PROJECT_ROOT),
    "default_data_dir": default_data_dir,
    "shipped_model": lambda: str(SHIPPED_MODEL),
    "interactive": is_interactive,
    "run_label": run_label,
    "short_run": short_run,
}
for _name, _fn in RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def compose_train_config(overrides: Sequence[str] = (), output_dir: str | Path = "") -> DictConfig:
    """The config ``python -m mnist_lab.train OVERRIDES`` would run, for code that trains
    without the command line (benchmarks, notebooks, tests, a run that trains its distillation
    teachers); it writes into ``output_dir``."""
    if GlobalHydra.instance().is_initialized():  # inside a command: Hydra knows conf/ already
        cfg = compose(config_name="train", overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir or PROJECT_ROOT / "logs" / "notebook")
    return cfg


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a keyed group (callbacks, loggers).

    Entries set to null are skipped, and so are factories that return None, so a config can
    switch one entry off (``callbacks.early_stopping=null``) without touching the others.
    """
    objects = []
    for key, entry in (cfg or {}).items():
        key = str(key)
        if isinstance(entry, DictConfig) and "_target_" in entry:
            try:
                obj = instantiate(entry)
            except InstantiationException as err:
                missing = _missing_package(err)
                if missing is None:
                    raise
                raise ConfigError(
                    f"`{key}` ({entry._target_}) needs a package that is not installed: "
                    f"{missing}. Install the project's extras (`pip install -e '.[trackers]'`; "
                    f"`make install` does) or choose another option for `{key}`."
                ) from None
            if obj is not None:
                objects.append(obj)
    return objects


def _missing_package(err: BaseException) -> str | None:
    """The first line of the ImportError behind an instantiation error, if one is."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ImportError):
        cause = cause.__cause__ or cause.__context__
    return str(cause).strip().splitlines()[0] if cause is not None else None


def group_choice(cfg: DictConfig, group: str) -> str:
    """The option picked for a config group (``model=lenet`` -> ``lenet``).

    Outside a Hydra run (compose API, notebooks) it falls back to the class name of ``_target_``.
    """
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice is not None:
            return str(choice)
    target = OmegaConf.select(cfg, f"{group}._target_")
    return target.rsplit(".", 1)[-1] if target else "none"
