"""How much does each corruption cost? ``python -m mnist_lab.robustness ckpt_path=RUN|CKPT|ONNX``.

Writes ``<run>/robustness/metrics.json``, ``table.md`` and ``robustness.png`` and prints the
table (:mod:`mnist_lab.evaluation.robustness`).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnist_lab.config import CONFIG_DIR  # importing config registers the resolvers
from mnist_lab.errors import entry_point
from mnist_lab.evaluation.robustness import evaluate_robustness, table


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="robustness")
@entry_point
def main(cfg: DictConfig) -> None:
    report, out = evaluate_robustness(cfg)
    print(table(report), end="")
    print(f"report in {out}")


if __name__ == "__main__":
    main()
