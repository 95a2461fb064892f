"""Hydra glue shared by every entry point: config resolvers and instantiation of keyed groups."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_lab.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PROJECT_ROOT / "conf")


def default_data_dir() -> str:
    """``$MNIST_DATA_DIR`` when set (CI, offline machines), else ``data/`` in the project."""
    return os.environ.get("MNIST_DATA_DIR") or str(PROJECT_ROOT / "data")


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


# What Lightning's Trainer accepts, plus `auto` (resolved by mnist_lab.hardware before this check).
PRECISIONS = {"auto", "32", "32-true", "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true"}
PRECISIONS |= {"16", "64", "64-true", "transformer-engine", "transformer-engine-float16"}


def _validates(trainer: DictConfig) -> bool:
    limit = trainer.get("limit_val_batches")
    every = trainer.get("check_val_every_n_epoch")
    return not (limit == 0 or every in (0, None)) and not trainer.get("fast_dev_run")


# The sweep launcher that runs jobs in joblib worker processes.
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def _is_joblib_launcher(target: str | None) -> bool:
    """Whether a ``hydra.launcher._target_`` is joblib's launcher (or a subclass of it)."""
    if not target:
        return False
    if target == JOBLIB_LAUNCHER:
        return True
    try:
        from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
    except ImportError:  # the plugin is not installed, so no launcher can be one of its
        return False
    from hydra.utils import get_class

    return issubclass(get_class(target), JoblibLauncher)


def _strategy_class(strategy: Any) -> type | None:
    """The Strategy class ``trainer.strategy`` names: a registered name (``ddp``, ``fsdp``,
    ``ddp_spawn`` ...) or a ``_target_``; None for ``auto`` and names Lightning does not know."""
    from hydra.utils import get_class
    from lightning.pytorch.strategies import StrategyRegistry

    if OmegaConf.is_dict(strategy) and "_target_" in strategy:
        return get_class(strategy["_target_"])
    if isinstance(strategy, str) and strategy in StrategyRegistry:
        return StrategyRegistry[strategy]["strategy"]
    return None


def _multi_process(trainer: DictConfig) -> bool:
    """Whether Lightning will start several processes: a parallel strategy (DDP, FSDP,
    DeepSpeed ...) or ``auto`` (DDP), over several devices or nodes."""
    import torch
    from lightning.pytorch.strategies import ParallelStrategy

    devices, nodes = trainer.get("devices"), int(trainer.get("num_nodes") or 1)
    if OmegaConf.is_list(devices):
        many = len(devices) > 1
    elif str(devices) == "auto":
        many = torch.cuda.device_count() > 1
    else:
        many = str(devices) not in ("1", "None")
    strategy = trainer.get("strategy") or "auto"
    if strategy == "auto":
        parallel = True  # Lightning picks DDP for several devices
    else:
        cls = _strategy_class(strategy)
        parallel = cls is not None and issubclass(cls, ParallelStrategy)
    return (many or nodes > 1) and parallel


def _trainer_argument_problems(trainer: DictConfig) -> list[str]:
    """``trainer.*`` keys its ``_target_`` does not take (a ``+trainer.x=`` typo), with the
    close matches; and counts that must be positive, which Lightning divides by."""
    import difflib
    import inspect

    from hydra.utils import get_class

    problems = []
    target = trainer.get("_target_")
    params = inspect.signature(get_class(target)).parameters if target else {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [name for name in params if name != "self"]
        for key in (str(k) for k in trainer if k != "_target_"):
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(f'trainer.{c}' for c in close)}? " if close else ""
            problems.append(
                f"trainer.{key} is not an argument of {target}: {hint}"
                "every argument is listed in conf/trainer/default.yaml (set it without a +)"
            )
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate is not None and int(accumulate) < 1:
        problems.append(
            f"trainer.accumulate_grad_batches={accumulate}: it is a number of batches per "
            "optimizer step, 1 or more"
        )
    return problems


def check_config(cfg: DictConfig) -> None:
    """Refuse impossible combinations before any data is loaded or any file is written."""
    import torch  # here, not at the top: serving an .onnx file imports this module, not torch

    problems = _trainer_argument_problems(cfg.trainer)
    monitored = OmegaConf.select(cfg, "scheduler.monitor")
    if monitored and not _validates(cfg.trainer):
        problems.append(
            f"scheduler={group_choice(cfg, 'scheduler')} watches {monitored}, but validation is "
            "off (trainer.limit_val_batches=0 or trainer.check_val_every_n_epoch=null): "
            "turn validation on or pick scheduler=onecycle|cosine|step|none"
        )
    if OmegaConf.select(cfg, "callbacks.early_stopping") and not _validates(cfg.trainer):
        problems.append(
            "callbacks=early_stopping needs validation every epoch, but it is off "
            "(trainer.limit_val_batches=0 or trainer.check_val_every_n_epoch=null)"
        )
    precision = str(cfg.trainer.get("precision"))
    accelerator = str(cfg.trainer.get("accelerator"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision not in PRECISIONS:
        problems.append(
            f"trainer.precision={precision} is not a precision: use auto (the default: chosen "
            "from the hardware), 32, bf16-mixed, or 16-mixed on a GPU"
        )
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        problems.append(
            f"trainer.accelerator={accelerator} (trainer=gpu/ddp), but torch sees no CUDA GPU on "
            "this machine: use trainer=default (accelerator auto) or trainer=cpu / trainer=ddp_cpu"
        )
    if precision.startswith("16") and on_cpu:
        problems.append(
            f"trainer.precision={precision} needs a GPU (float16 autocast); on the CPU use "
            "trainer.precision=bf16-mixed or 32"
        )
    batch_size = OmegaConf.select(cfg, "data.batch_size")
    if batch_size is not None and int(batch_size) < 1:
        problems.append(f"data.batch_size={batch_size} must be a positive number of images")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        last = os.path.join(str(cfg.paths.output_dir), "checkpoints", "last.ckpt")
        if not os.path.isfile(last):
            problems.append(
                f"ckpt_path=last, but {last} does not exist: resume in the run's own directory "
                "with hydra.run.dir=<that run's directory> (it holds checkpoints/last.ckpt)"
            )
    elif ckpt_path and not os.path.isfile(str(ckpt_path)):
        problems.append(f"ckpt_path={ckpt_path}: no such checkpoint file")
    launcher = (
        # HydraConfig.get() is typed as the HydraConf dataclass; at runtime it is a DictConfig.
        OmegaConf.select(cast(DictConfig, HydraConfig.get()), "launcher._target_")
        if HydraConfig.initialized()
        else None
    )
    if _is_joblib_launcher(launcher) and _multi_process(cfg.trainer):
        problems.append(
            "hydra/launcher=joblib runs jobs in worker processes, which Lightning's DDP cannot "
            "re-launch: use the default launcher for DDP sweeps (drop hydra/launcher=joblib) or "
            "train each joblib job in one process (trainer=default or trainer.devices=1)"
        )
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
