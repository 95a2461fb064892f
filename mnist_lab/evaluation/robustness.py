"""How much does each corruption cost? The suite behind ``python -m mnist_lab.robustness``,
``eval robustness=true`` and ``bench robustness``.

Runs the 10,000 test digits through the corruption suite (mnist_lab/data/corruptions.py, modelled on
MNIST-C) and the cross-source suite (what other writers and scanners do: low resolution, box
filling, pen widths, slant, binarisation) and writes ``<run>/robustness/metrics.json``
(``clean_acc``, ``corruptions``: name -> accuracy, ``mean_corrupt_acc``, ``cross_source``,
``mean_cross_source_acc``) and ``robustness.png`` (examples per condition and the accuracy
bars), and prints the table. ``eval robustness=true`` runs it after the eval report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mnist_lab import runs
from mnist_lab.data.corruptions import CONDITIONS, CORRUPTIONS, CROSS_SOURCE, SUITE_SEED, corrupt
from mnist_lab.data.files import EVAL_SPLITS, load_split
from mnist_lab.errors import ConfigError
from mnist_lab.evaluation.figures import robustness_figure, save
from mnist_lab.evaluation.inference import accuracy, probabilities
from mnist_lab.evaluation.loading import load_predictor
from mnist_lab.serving.predictor import Predictor
from mnist_lab.training.checkpoint import run_dir_of

log = logging.getLogger(__name__)


def corruption_names(selection: Any) -> list[str]:
    """``all`` (both suites), ``mnist_c``, ``cross_source`` or a list of names -> the names,
    checked against the suites."""
    groups = {"all": list(CONDITIONS), "mnist_c": list(CORRUPTIONS)}
    groups["cross_source"] = list(CROSS_SOURCE)
    if selection is None or (isinstance(selection, str) and selection in groups):
        return groups[selection or "all"]
    names = [selection] if isinstance(selection, str) else list(selection)
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise ConfigError(
            f"corruptions={names}: unknown {unknown}; use all, mnist_c, cross_source or a list "
            f"of {', '.join(CONDITIONS)} (conf/robustness.yaml)"
        )
    return names


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 5) if values else None


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
    mnist_c = {n: a for n, a in accuracies.items() if n in CORRUPTIONS}
    cross = {n: a for n, a in accuracies.items() if n in CROSS_SOURCE}
    report = {
        "clean_acc": round(clean_acc, 5),
        "corruptions": mnist_c,
        "mean_corrupt_acc": _mean(list(mnist_c.values())),
        "cross_source": cross,
        "mean_cross_source_acc": _mean(list(cross.values())),
        "n_images": len(images),
        "seed": seed,
    }
    return report, shown


def table(report: dict[str, Any]) -> str:
    lines = ["| corruption | accuracy |", "|---|---:|", f"| clean | {report['clean_acc']:.2%} |"]
    for group, mean, title in (
        ("corruptions", "mean_corrupt_acc", "the suite (MNIST-C)"),
        ("cross_source", "mean_cross_source_acc", "the cross-source suite"),
    ):
        if report.get(group):
            lines += [f"| {name} | {acc:.2%} |" for name, acc in report[group].items()]
            lines.append(f"| **mean over {title}** | **{report[mean]:.2%}** |")
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
        predictor, images, labels, names or list(CONDITIONS), seed, examples
    )
    report |= {"model": str(predictor.path)} | (extra or {})
    out.mkdir(parents=True, exist_ok=True)
    runs.write_metrics(out, "robustness", report)
    (out / "table.md").write_text(table(report))
    accuracies = report["corruptions"] | report["cross_source"]
    figure = robustness_figure(images[:examples], shown, accuracies, report["clean_acc"])
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
