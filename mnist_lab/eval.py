"""Test a checkpoint and write its report: ``python -m mnist_lab.eval ckpt_path=PATH``.

Writes ``metrics.json``, ``per_class.md`` and the figures into ``<run dir>/eval/``; with
``robustness=true`` also the corruption suite into ``<run dir>/robustness/``
(:mod:`mnist_lab.evaluation.evaluate`).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnist_lab.config import CONFIG_DIR  # importing config registers the resolvers
from mnist_lab.errors import entry_point
from mnist_lab.evaluation.evaluate import evaluate
from mnist_lab.evaluation.metrics import per_class_markdown


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@entry_point
def main(cfg: DictConfig) -> None:
    report, out = evaluate(cfg)
    print(per_class_markdown(report["per_class"]), end="")
    print(
        f"macro F1 {report['test/f1_macro']:.4f}, ECE {report['test/ece']:.4f}, "
        f"test/loss {report['test/loss']:.4f}; report in {out}"
    )
    print(f"test/acc: {report['test/acc']:.4f}")


if __name__ == "__main__":
    main()
