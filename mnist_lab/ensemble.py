"""Evaluate the mean prediction of several checkpoints (and test-time augmentation) on the test set.

``python -m mnist_lab.ensemble ckpts=[logs/train/runs/A,logs/train/runs/B] tta=true``
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_lab.checkpoint import CheckpointError, load_net, resolve_checkpoints
from mnist_lab.config import CONFIG_DIR
from mnist_lab.data import MNISTDataError
from mnist_lab.inference import accuracy, predict_proba

log = logging.getLogger(__name__)


def ensemble(cfg: DictConfig) -> dict[str, Any]:
    """Accuracy of each member, and of their averaged probabilities, without and with TTA."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    images, labels = datamodule.tensors["test"]
    ckpts = resolve_checkpoints(
        OmegaConf.to_container(cfg.ckpts) if OmegaConf.is_list(cfg.ckpts) else cfg.ckpts
    )
    modes = [False, True] if cfg.tta else [False]
    sums = {tta: torch.zeros(len(labels), 10) for tta in modes}
    members = []
    for path in ckpts:
        net, _ = load_net(path)
        member: dict[str, Any] = {"ckpt": str(path)}
        for tta in modes:
            probs = predict_proba(
                net, images, tta=tta, batch_size=cfg.batch_size, device=cfg.device
            )
            member["test/acc_tta" if tta else "test/acc"] = accuracy(probs, labels)
            sums[tta] += probs
        members.append(member)
    result: dict[str, Any] = {"members": members, "n_models": len(ckpts)}
    for tta in modes:
        result["ensemble/acc_tta" if tta else "ensemble/acc"] = accuracy(sums[tta], labels)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="ensemble")
def main(cfg: DictConfig) -> None:
    try:
        result = ensemble(cfg)
    except (CheckpointError, MNISTDataError) as err:
        log.error("%s", err)
        sys.exit(1)
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
