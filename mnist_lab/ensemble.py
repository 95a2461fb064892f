"""Evaluate the mean prediction of several checkpoints (and test-time augmentation) on the test set.

``python -m mnist_lab.ensemble ckpts=[logs/train/runs/A,logs/train/runs/B] tta=true``

``split=val`` evaluates on the held-out training images the runs chose their checkpoints on:
the place to choose an ensemble's members or whether to use TTA, so that the test set is
touched only by the final choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mnist_lab.checkpoint import load_net, resolve_checkpoints, run_config
from mnist_lab.config import CONFIG_DIR
from mnist_lab.errors import ConfigError, entry_point
from mnist_lab.inference import accuracy, predict_proba
from mnist_lab.mnist_files import load_split


class EnsembleNet(nn.Module):
    """Several trained nets as one: the log of their mean probabilities (a distillation
    teacher, ``module.teacher``). Always in eval mode, never trained."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> EnsembleNet:
        return super().train(False)  # BatchNorm and dropout stay in inference mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([net(x).float().softmax(-1) for net in self.nets]).mean(0)
        return probs.clamp_min(1e-12).log()  # no -inf: KL against it stays finite


def load_ensemble(ckpts: list[str] | str) -> EnsembleNet:
    """An :class:`EnsembleNet` of checkpoint files, run directories or multirun directories."""
    return EnsembleNet([load_net(path)[0] for path in resolve_checkpoints(ckpts)])


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
    ``data.split_seed`` of their run configs), rebuilt by the data module that held them out."""
    from mnist_lab.data import MNISTDataModule  # Lightning: only for this split

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
    datamodule = MNISTDataModule(
        data_dir=data_dir, **{k: v for k, v in split.items() if v is not None}
    )
    datamodule.setup()
    return datamodule.tensors["val"]


SPLITS = ("test", "val")


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    """The ensemble of ``cfg.ckpts`` on the test set (or on the runs' validation images)."""
    if cfg.split not in SPLITS:
        raise ConfigError(
            f"split={cfg.split!r} (conf/ensemble.yaml): choose one of {', '.join(SPLITS)}"
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="ensemble")
@entry_point
def main(cfg: DictConfig) -> None:
    result = ensemble(cfg)
    out = Path(cfg.paths.output_dir) / "ensemble.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    split = result["split"]
    for m in result["members"]:
        tta = f"  +TTA {m[f'{split}/acc_tta']:.4f}" if f"{split}/acc_tta" in m else ""
        print(f"{m[f'{split}/acc']:.4f}{tta}  {m['ckpt']}")
    n = result["n_models"]
    if "ensemble/acc_tta" in result:
        print(f"ensemble of {n} +TTA {split}/acc: {result['ensemble/acc_tta']:.4f}")
    print(f"ensemble of {n} {split}/acc: {result['ensemble/acc']:.4f}")


if __name__ == "__main__":
    main()
