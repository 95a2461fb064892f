"""The mean prediction of several checkpoints (and test-time augmentation), per member and as
an ensemble: what ``python -m mnist_lab.ensemble`` and ``bench accuracy`` report.

``split=val`` evaluates on the held-out training images the runs chose their checkpoints on:
the place to choose an ensemble's members or whether to use TTA, so that the test set is
touched only by the final choice.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from mnist_lab.data.files import EVAL_SPLITS, load_split
from mnist_lab.errors import ConfigError
from mnist_lab.evaluation.inference import accuracy, predict_proba
from mnist_lab.training.checkpoint import load_net, resolve_checkpoints, run_config


def evaluate_ensemble(
    ckpts: list[str] | str,
    images: torch.Tensor,
    labels: torch.Tensor,
    tta: bool = False,
    batch_size: int = 1000,
    device: str = "cpu",
    split: str = "test",
) -> dict[str, Any]:
    """Accuracy of each member, and of their averaged probabilities, without and with TTA.

    ``ckpts``: checkpoint files, run directories or multirun directories. The one ensembling
    code path: the ``ensemble`` command and ``bench accuracy`` both call it.
    """
    paths = resolve_checkpoints(ckpts)
    modes = [False, True] if tta else [False]
    sums = {mode: torch.zeros(len(labels), 10) for mode in modes}
    members = []
    for path in paths:
        net, _ = load_net(path)
        member: dict[str, Any] = {"ckpt": str(path)}
        for mode in modes:
            probs = predict_proba(net, images, tta=mode, batch_size=batch_size, device=device)
            member[f"{split}/acc_tta" if mode else f"{split}/acc"] = accuracy(probs, labels)
            sums[mode] += probs
        members.append(member)
    result: dict[str, Any] = {"split": split, "members": members, "n_models": len(paths)}
    for mode in modes:
        result["ensemble/acc_tta" if mode else "ensemble/acc"] = accuracy(sums[mode], labels)
    return result


def validation_split(
    ckpts: list[str] | str, data_dir: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images the members were trained next to (``data.val_size`` and
    ``data.split_seed`` of their run configs)."""
    keys = ("val_size", "split_seed")
    splits = {
        tuple((config.get("data") or {}).get(k) for k in keys)
        for config in map(run_config, resolve_checkpoints(ckpts))
    }
    if len(splits) > 1:
        raise ConfigError(
            f"The checkpoints held out different validation images (data.val_size, "
            f"data.split_seed: {sorted(splits, key=str)}); evaluate them with split=test, or "
            "ensemble runs trained with the same data.val_size and data.split_seed."
        )
    split = dict(zip(keys, splits.pop(), strict=True))
    return load_split("val", data_dir, **{k: v for k, v in split.items() if v is not None})


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    """The ensemble of ``cfg.ckpts`` on the test set (or on the runs' validation images)."""
    if cfg.split not in EVAL_SPLITS:
        raise ConfigError(
            f"split={cfg.split!r} (conf/ensemble.yaml): choose one of {', '.join(EVAL_SPLITS)}"
        )
    # A ListConfig converts to a list (the stubs give to_container one type for every node).
    ckpts = (
        cast(list[str], OmegaConf.to_container(cfg.ckpts))
        if OmegaConf.is_list(cfg.ckpts)
        else cfg.ckpts
    )
    images, labels = (
        validation_split(ckpts, cfg.data_dir)
        if cfg.split == "val"
        else load_split("test", cfg.data_dir)
    )
    return evaluate_ensemble(
        ckpts, images, labels, cfg.tta, cfg.batch_size, cfg.device, split=cfg.split
    )
