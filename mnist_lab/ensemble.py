"""Evaluate the mean prediction of several checkpoints (and test-time augmentation) on the test set.

``python -m mnist_lab.ensemble ckpts=[logs/train/runs/A,logs/train/runs/B] tta=true``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from mnist_lab.checkpoint import load_net, resolve_checkpoints
from mnist_lab.config import CONFIG_DIR
from mnist_lab.errors import entry_point
from mnist_lab.inference import accuracy, predict_proba
from mnist_lab.mnist_files import load_split


def evaluate_ensemble(
    ckpts: list[str] | str,
    images: torch.Tensor,
    labels: torch.Tensor,
    tta: bool = False,
    batch_size: int = 1000,
    device: str = "cpu",
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
            member["test/acc_tta" if mode else "test/acc"] = accuracy(probs, labels)
            sums[mode] += probs
        members.append(member)
    result: dict[str, Any] = {"members": members, "n_models": len(paths)}
    for mode in modes:
        result["ensemble/acc_tta" if mode else "ensemble/acc"] = accuracy(sums[mode], labels)
    return result


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    """The ensemble of ``cfg.ckpts`` on the test set."""
    images, labels = load_split("test", cfg.data_dir)
    # A ListConfig converts to a list (the stubs give to_container one type for every node).
    ckpts = (
        cast(list[str], OmegaConf.to_container(cfg.ckpts))
        if OmegaConf.is_list(cfg.ckpts)
        else cfg.ckpts
    )
    return evaluate_ensemble(ckpts, images, labels, cfg.tta, cfg.batch_size, cfg.device)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="ensemble")
@entry_point
def main(cfg: DictConfig) -> None:
    result = ensemble(cfg)
    out = Path(cfg.paths.output_dir) / "ensemble.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for m in result["members"]:
        tta = f"  +TTA {m['test/acc_tta']:.4f}" if "test/acc_tta" in m else ""
        print(f"{m['test/acc']:.4f}{tta}  {m['ckpt']}")
    if "ensemble/acc_tta" in result:
        print(f"ensemble of {result['n_models']} +TTA test/acc: {result['ensemble/acc_tta']:.4f}")
    print(f"ensemble of {result['n_models']} test/acc: {result['ensemble/acc']:.4f}")


if __name__ == "__main__":
    main()
