"""Test a checkpoint and write its report (``python -m mnist_lab.eval ckpt_path=PATH``).

Writes ``metrics.json``, ``per_class.md``, ``confusion_matrix.png``, ``errors.png``,
``reliability.png`` and (when the checkpoint comes from a run directory with logs)
``curves.png`` into ``<run dir>/eval/``; with ``robustness=true`` also the corruption suite's
report into ``<run dir>/robustness/`` (:mod:`mnist_lab.evaluation.robustness`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from mnist_lab import runs
from mnist_lab.data.files import load_split
from mnist_lab.evaluation.figures import (
    confusion_matrix_figure,
    curves_figure,
    error_gallery_figure,
    reliability_figure,
    save,
)
from mnist_lab.evaluation.inference import TorchPredictor, predict_proba
from mnist_lab.evaluation.metrics import classification_metrics, per_class_markdown
from mnist_lab.evaluation.robustness import default_out, run_suite
from mnist_lab.evaluation.run_logs import read_epoch_curves
from mnist_lab.training.checkpoint import load_net, resolve_checkpoints, run_dir_of
from mnist_lab.training.hardware import resolve_precision

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """Test the checkpoint with the Trainer (``test/acc``, ``test/loss``: the numbers ``train``
    reported) and compute the full report from :func:`predict_proba`'s probabilities."""
    import lightning as L  # here, not at the top: bad paths are refused without its ~4 s import

    from mnist_lab.training.module import build_module

    ckpt = resolve_checkpoints(str(cfg.ckpt_path))[0]
    net, run_config = load_net(ckpt)
    # The same LightningModule (loss, label smoothing, layout) the run trained with.
    module = build_module(run_config, net)
    with open_dict(cfg):
        if cfg.trainer.precision is None:
            cfg.trainer.precision = run_config["trainer"]["precision"]
        # `trainer.precision=auto` given to eval (or a config built outside `train`) -> this machine
        cfg.trainer.precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    datamodule = instantiate(cfg.data)
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False
    )
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    data = cfg.data
    images, labels = load_split("test", data.data_dir, data.download)
    probs = predict_proba(net, images)  # float32, as export and serve run the model
    report = classification_metrics(probs, labels)
    report["test/acc"] = tested["test/acc"]  # the Trainer's number: what `train` reported
    report["test/loss"] = tested["test/loss"]
    report["ckpt_path"] = str(ckpt)

    run_dir = run_dir_of(ckpt)
    out = (
        Path(cfg.out_dir)
        if cfg.out_dir
        else (run_dir / "eval" if run_dir else Path(cfg.paths.output_dir))
    )
    out.mkdir(parents=True, exist_ok=True)
    if cfg.robustness:  # the corruption suite, into <run>/robustness (as `robustness` writes)
        limit = cfg.robustness_limit or len(images)
        robust = run_suite(
            TorchPredictor(ckpt, loaded=(net, run_config)),
            images[:limit],
            labels[:limit],
            default_out(ckpt, out / "robustness"),
        )
        report["robustness"] = {
            k: robust[k] for k in ("clean_acc", "mean_corrupt_acc", "mean_cross_source_acc")
        }
    runs.write_metrics(out, "eval", report)
    (out / "per_class.md").write_text(per_class_markdown(report["per_class"]))
    save(
        confusion_matrix_figure(torch.tensor(report["confusion_matrix"])),
        out / "confusion_matrix.png",
    )
    save(error_gallery_figure(images, probs, labels, cfg.gallery_size), out / "errors.png")
    save(reliability_figure(probs, labels), out / "reliability.png")
    curves = read_epoch_curves(run_dir) if run_dir else {}
    if any(curves.values()):
        save(curves_figure(curves), out / "curves.png")
    else:
        log.warning("no training logs next to %s: curves.png not written", ckpt)
    return report, out
