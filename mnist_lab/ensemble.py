"""Evaluate the mean prediction of several checkpoints (and TTA) on the test set.

``python -m mnist_lab.ensemble ckpts=[logs/train/runs/A,logs/train/runs/B] tta=true``;
``split=val`` on the runs' validation images (:mod:`mnist_lab.evaluation.ensemble`).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_lab.config import CONFIG_DIR  # importing config registers the resolvers
from mnist_lab.errors import entry_point
from mnist_lab.evaluation.ensemble import ensemble


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
