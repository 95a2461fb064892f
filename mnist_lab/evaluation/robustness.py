"""How much does each corruption cost? The suite behind ``python -m mnist_lab.robustness``,
``eval robustness=true`` and ``bench robustness``.

Runs the 10,000 test digits through the corruption suite (mnist_lab/data/corruptions.py, modelled on
MNIST-C) and writes ``<run>/robustness/metrics.json`` (``clean_acc``, ``corruptions``: name ->
accuracy, ``mean_corrupt_acc``) and ``robustness.png`` (examples per corruption and the
accuracy bars), and prints the table. ``eval robustness=true`` runs it after the eval report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mnist_lab import runs
from mnist_lab.data.corruptions import CORRUPTIONS, SUITE_SEED, corrupt
from mnist_lab.data.files import EVAL_SPLITS, load_split
from mnist_lab.errors import ConfigError
from mnist_lab.evaluation.figures import robustness_figure, save
from mnist_lab.evaluation.inference import accuracy, probabilities
from mnist_lab.evaluation.loading import load_predictor
from mnist_lab.serving.predictor import Predictor
from mnist_lab.training.checkpoint import run_dir_of

log = logging.getLogger(__name__)


def corruption_names(selection: Any) -> list[str]:
    """``all`` or a list of names -> the names, checked against the suite."""
    if selection in (None, "all"):
        return list(CORRUPTIONS)
    names = [selection] if isinstance(selection, str) else list(selection)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise ConfigError(
            f"corruptions={names}: unknown {unknown}; use `all` or a list of "
            f"{', '.join(CORRUPTIONS)} (conf/robustness.yaml)"
        )
    return names


def robustness_report(
    predictor: Predictor,
    images: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    seed: int,
    examples: int = 8,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Accuracy on the clean images and under each corruption; the first ``examples`` corrupted
    digits of each, for the figure."""
    clean_acc = accuracy(probabilities(predictor, images), labels)
    accuracies, shown = {}, {}
    for name in names:
        corrupted = corrupt(name, images, seed)
        accuracies[name] = round(accuracy(probabilities(predictor, corrupted), labels), 5)
        shown[name] = corrupted[:examples]
        log.info("%-14s %.2f %%", name, 100 * accuracies[name])
    report = {
        "clean_acc": round(clean_acc, 5),
        "corruptions": accuracies,
        "mean_corrupt_acc": round(sum(accuracies.values()) / len(accuracies), 5),
        "n_images": len(images),
        "seed": seed,
    }
    return report, shown


def table(report: dict[str, Any]) -> str:
    lines = ["| corruption | accuracy |", "|---|---:|", f"| clean | {report['clean_acc']:.2%} |"]
    lines += [f"| {name} | {acc:.2%} |" for name, acc in report["corruptions"].items()]
    lines.append(f"| **mean over the suite** | **{report['mean_corrupt_acc']:.2%}** |")
    return "\n".join(lines) + "\n"


def run_suite(
    predictor: Predictor,
    images: torch.Tensor,
    labels: torch.Tensor,
    out: Path,
    names: list[str] | None = None,
    seed: int = SUITE_SEED,
    examples: int = 8,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The suite on ``images``; writes metrics.json (with ``extra`` keys), table.md and
    robustness.png into ``out``."""
    images, labels = images.cpu(), labels.cpu()
    report, shown = robustness_report(
        predictor, images, labels, names or list(CORRUPTIONS), seed, examples
    )
    report |= {"model": str(predictor.path)} | (extra or {})
    out.mkdir(parents=True, exist_ok=True)
    runs.write_metrics(out, "robustness", report)
    (out / "table.md").write_text(table(report))
    figure = robustness_figure(images[:examples], shown, report["corruptions"], report["clean_acc"])
    save(figure, out / "robustness.png")
    return report


def default_out(model: Path, fallback: Path) -> Path:
    """``<run>/robustness`` for a checkpoint inside a run directory, else ``fallback``."""
    run_dir = run_dir_of(model) if model.suffix == ".ckpt" else None
    return run_dir / "robustness" if run_dir else fallback


def evaluate_robustness(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """The suite on ``cfg.split`` for ``cfg.ckpt_path`` (a run, a checkpoint or an ONNX file)."""
    selection = cfg.corruptions
    names = corruption_names(
        OmegaConf.to_object(selection) if OmegaConf.is_list(selection) else selection
    )
    if cfg.split not in EVAL_SPLITS:
        raise ConfigError(f"split={cfg.split} is not supported: use split=test or split=val")
    predictor = load_predictor(cfg.ckpt_path, threads=cfg.threads)
    data = cfg.data
    images, labels = load_split(
        cfg.split, data.data_dir, data.download, data.val_size, data.split_seed
    )
    if cfg.limit:
        images, labels = images[: cfg.limit], labels[: cfg.limit]
    out = (
        Path(cfg.out_dir)
        if cfg.out_dir
        else default_out(predictor.path, Path(cfg.paths.output_dir))
    )
    if cfg.split != "test" and not cfg.out_dir:  # never overwrite the test report
        out = out.with_name(f"{out.name}_{cfg.split}")
    extra = {"split": cfg.split}
    report = run_suite(predictor, images, labels, out, names, cfg.seed, cfg.examples, extra)
    return report, out
