"""Train one model: ``python -m mnist_lab.train model=resnet optimizer=sgd``.

The work is :func:`mnist_lab.training.fit.train`; this command adds what only a command line
has: Hydra's config, the DDP/sweep scope, the exit code and the two printed lines.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnist_lab.config import CONFIG_DIR  # importing config registers the resolvers
from mnist_lab.errors import MnistLabError, entry_point
from mnist_lab.ranks import is_rank_zero
from mnist_lab.training.distributed import hydra_job_scope, in_sweep_child, report_rank_failure
from mnist_lab.training.fit import failed_run, train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@entry_point
def main(cfg: DictConfig) -> float | None:
    try:
        with hydra_job_scope():
            metrics = train(cfg)
    except MnistLabError as err:
        return failed_run(err, cfg)
    except Exception as err:  # a bug keeps its traceback, but never kills a sweep from a child
        if not in_sweep_child():
            raise
        report_rank_failure(err, cfg.paths.output_dir)
        return None
    if is_rank_zero():  # DDP: one copy of the result
        print(f"train_seconds: {metrics['train_seconds']:.1f}")
        print(f"test/acc: {metrics['test/acc']:.4f}")
    # Sweepers (Optuna) optimise the value returned here.
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
