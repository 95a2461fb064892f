"""Hydra glue shared by every entry point: config resolvers and instantiation of keyed groups."""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_lab.data import PROJECT_ROOT, default_data_dir

CONFIG_DIR = str(PROJECT_ROOT / "conf")


def is_interactive() -> bool:
    """Show live progress bars only to a person at a terminal, never in CI logs or pipes."""
    return sys.stdout.isatty() and not os.environ.get("CI")


RESOLVERS = {
    "project_root": lambda: str(PROJECT_ROOT),
    "default_data_dir": default_data_dir,
    "interactive": is_interactive,
}
for _name, _fn in RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a keyed group (callbacks, loggers).

    Entries set to null are skipped, and so are factories that return None, so a config can
    switch one entry off (``callbacks.early_stopping=null``) without touching the others.
    """
    objects = []
    for entry in (cfg or {}).values():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            obj = instantiate(entry)
            if obj is not None:
                objects.append(obj)
    return objects


def group_choice(cfg: DictConfig, group: str) -> str:
    """The option picked for a config group (``model=lenet`` -> ``lenet``).

    Outside a Hydra run (compose API, notebooks) it falls back to the class name of ``_target_``.
    """
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice is not None:
            return str(choice)
    target = OmegaConf.select(cfg, f"{group}._target_") or OmegaConf.select(
        cfg, f"{group}.scheduler._target_"
    )
    return target.rsplit(".", 1)[-1] if target else "none"
