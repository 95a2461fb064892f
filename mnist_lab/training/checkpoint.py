"""Load a trained net from a Lightning checkpoint, safely, with no Lightning or Trainer needed.

Checkpoints carry the run's resolved config (``hyper_parameters.run_config``), so the net is
rebuilt from its own config and the weights are read with ``torch.load(weights_only=True)``:
no arbitrary code from a checkpoint file is ever executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, cast

import torch
from hydra.utils import instantiate
from torch import nn

from mnist_lab import runs
from mnist_lab.errors import CheckpointError
from mnist_lab.models.ensemble import EnsembleNet


def resolve_checkpoints(paths: list[str] | str) -> list[Path]:
    """Checkpoint files from files, run directories (their best checkpoint, from metrics.json)
    or multirun directories (every job's best checkpoint)."""
    found: list[Path] = []
    for item in [paths] if isinstance(paths, str) else paths:
        path = Path(item)
        if not path.exists():
            raise CheckpointError(
                f"{path}: no such file or directory (give a .ckpt file or a run directory such "
                "as logs/train/runs/<time>)"
            )
        if path.is_file():
            found.append(path)
        elif runs.has_metrics(path):
            found.append(runs.best_checkpoint(path))
        elif path.is_dir() and (jobs := runs.finished_runs(path)):
            found.extend(resolve_checkpoints([str(job) for job in jobs]))
        else:
            raise CheckpointError(
                f"{path} is neither a checkpoint file nor a run directory with metrics.json "
                "(give ckpt paths like logs/train/runs/<time>/checkpoints/last.ckpt)"
            )
    return found


def run_dir_of(ckpt: Path) -> Path | None:
    """``<run>/checkpoints/x.ckpt`` -> ``<run>``; None for a file outside a run directory."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refusing to load {path}: it holds objects other than tensors and plain data "
            f"(weights_only load failed: {str(err).splitlines()[0]}). Only load checkpoints "
            "you trust; mnist_lab's own checkpoints load safely."
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"Cannot read checkpoint {path}: {err}") from None


# ``_target_``s that checkpoints written before the package had layers (before commit 9512925)
# store in their run config, and where each lives now: such checkpoints load unchanged.
MOVED_TARGETS = {
    "mnist_lab.module.Classifier": "mnist_lab.training.module.Classifier",
    "mnist_lab.data.MNISTDataModule": "mnist_lab.data.datamodule.MNISTDataModule",
    "mnist_lab.callbacks.last_checkpoint": "mnist_lab.training.callbacks.last_checkpoint",
    "mnist_lab.callbacks.StopOnNonFinite": "mnist_lab.training.callbacks.StopOnNonFinite",
    "mnist_lab.callbacks.RandomState": "mnist_lab.training.callbacks.RandomState",
    "mnist_lab.callbacks.progress_bar": "mnist_lab.training.callbacks.progress_bar",
    "mnist_lab.callbacks.Figures": "mnist_lab.evaluation.callbacks.Figures",
    "mnist_lab.trackers.MLFlowLogger": "mnist_lab.training.trackers.MLFlowLogger",
    "mnist_lab.teachers.preset_ensemble": "mnist_lab.training.teachers.preset_ensemble",
    "mnist_lab.ensemble.load_ensemble": "mnist_lab.training.checkpoint.load_ensemble",
}


def _moved(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: MOVED_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str) else _moved(v)
            for k, v in node.items()
        }
    return [_moved(v) for v in node] if isinstance(node, list) else node


def _run_config(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    config = ckpt.get("hyper_parameters", {}).get("run_config")
    if not config or "model" not in config:
        raise CheckpointError(f"{path} was not written by mnist_lab.train (no run_config inside)")
    return cast(dict[str, Any], _moved(config))


def run_config(path: str | Path) -> dict[str, Any]:
    """The resolved config a checkpoint's run trained with, without building its net."""
    return _run_config(load_checkpoint(path), path)


def load_net(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained ``nn.Module`` (eval mode, CPU) and the run config it was trained with."""
    ckpt = load_checkpoint(path)
    config = _run_config(ckpt, path)
    net = instantiate(config["model"])
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    net.load_state_dict(state)
    return net.eval(), config


def load_ensemble(ckpts: list[str] | str) -> EnsembleNet:
    """An :class:`EnsembleNet` of checkpoint files, run directories or multirun directories."""
    return EnsembleNet([load_net(path)[0] for path in resolve_checkpoints(ckpts)])
