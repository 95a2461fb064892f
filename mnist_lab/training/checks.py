"""The run config's checks, in one place, before anything is built: ``prepare(cfg)`` resolves
``auto`` (precision, memory layout) once for this machine and refuses impossible combinations
with one message that lists every problem, the key to change and the values allowed.

Lightning's own classes (Trainer signature, strategy registry) are imported inside the checks
that need them, so a config error in a command that never trains costs no Lightning import.
"""

from __future__ import annotations

import os
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mnist_lab.config import group_choice
from mnist_lab.errors import ConfigError
from mnist_lab.training.hardware import resolve_auto


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Resolve ``auto`` in place (so the checkpoint stores the concrete choice), then check the
    whole config; the hardware choices and machine block, for the log and ``metrics.json``."""
    hardware = resolve_auto(cfg)
    check_config(cfg)
    return hardware


# What Lightning's Trainer accepts, plus `auto` (which `prepare` resolves before the check).
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
    consistency = OmegaConf.select(cfg, "module.consistency") or 0
    if consistency and not OmegaConf.select(cfg, "data.augment.twins"):
        problems.append(
            f"module.consistency={consistency} compares the two twins of each image, but "
            "data.augment.twins is off: set data.augment.twins=true "
            "(conf/data/augment/robust.yaml) or module.consistency=0"
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
