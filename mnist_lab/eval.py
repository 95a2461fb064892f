"""Test a checkpoint and write its report: ``python -m mnist_lab.eval ckpt_path=PATH``.

Writes ``metrics.json``, ``per_class.md``, ``confusion_matrix.png``, ``errors.png``,
``reliability.png`` and (when the checkpoint comes from a run directory with logs)
``curves.png`` into ``<run dir>/eval/``; with ``robustness=true`` also the corruption suite's
report into ``<run dir>/robustness/`` (see ``mnist_lab.robustness``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from mnist_lab import runs
from mnist_lab.checkpoint import load_net, resolve_checkpoints, run_dir_of
from mnist_lab.config import CONFIG_DIR
from mnist_lab.errors import entry_point
from mnist_lab.figures import (
    confusion_matrix_figure,
    curves_figure,
    error_gallery_figure,
    reliability_figure,
    save,
)
from mnist_lab.hardware import resolve_precision
from mnist_lab.inference import TorchPredictor
from mnist_lab.metrics import classification_metrics, per_class_markdown
from mnist_lab.robustness import default_out, run_suite
from mnist_lab.run_logs import read_epoch_curves

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """Test the checkpoint with the Trainer (as ``train`` does) and compute the full report."""
    import lightning as L  # here, not at the top: bad paths are refused without its ~4 s import

    from mnist_lab.module import build_module

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
    # one dataloader: predict returns the list of per-batch logits (the stubs allow None too)
    logits = torch.cat(cast(list[torch.Tensor], trainer.predict(module, datamodule=datamodule)))
    images, labels = datamodule.tensors["test"]
    probs = logits.softmax(-1)
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
            TorchPredictor(ckpt),
            images[:limit],
            labels[:limit],
            default_out(ckpt, out / "robustness"),
        )
        report["robustness"] = {k: robust[k] for k in ("clean_acc", "mean_corrupt_acc")}
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
