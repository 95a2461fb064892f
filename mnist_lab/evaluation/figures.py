"""The report figures, drawn once here for eval, TensorBoard and the sweep summary (Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DIGITS = [str(d) for d in range(10)]


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def close(*figures: Figure) -> None:
    """Free figures that were logged rather than saved (pyplot keeps every open one)."""
    for fig in figures:
        plt.close(fig)


def confusion_matrix_figure(matrix: torch.Tensor, title: str = "Confusion matrix") -> Figure:
    """Counts, true digit per row, predicted digit per column, numbers in every cell."""
    counts = matrix.cpu().numpy().astype(int)
    fig, ax = plt.subplots(figsize=(7, 6))
    shown = np.log1p(counts)  # log colour scale: the off-diagonal errors stay visible
    im = ax.imshow(shown, cmap="Blues")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if shown[i, j] > shown.max() * 0.6 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(10), DIGITS)
    ax.set_yticks(range(10), DIGITS)
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"{title} ({counts.sum():,} images, {np.trace(counts):,} correct)")
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    return fig


def most_confident_errors(
    probs: torch.Tensor, labels: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices, predictions and confidences of the ``k`` wrong predictions made most confidently."""
    conf, pred = probs.max(-1)
    wrong = (pred != labels).nonzero().flatten()
    order = conf[wrong].argsort(descending=True)[:k]
    idx = wrong[order]
    return idx, pred[idx], conf[idx]


def error_gallery_figure(
    images: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, k: int = 32
) -> Figure:
    """The most confidently wrong digits, each titled true -> predicted (confidence)."""
    idx, pred, conf = most_confident_errors(probs, labels, k)
    cols = 8
    rows = max(1, -(-len(idx) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, p, c in zip(axes.flat, idx.tolist(), pred.tolist(), conf.tolist(), strict=False):
        ax.imshow(images[i].cpu().numpy(), cmap="gray")
        ax.set_title(f"{int(labels[i])}→{p} ({c:.0%})", fontsize=9, color="crimson")
    fig.suptitle(f"Most confident errors: true→predicted (confidence), {len(idx)} shown")
    return fig


def reliability_figure(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> Figure:
    """Accuracy vs confidence per confidence bin; the diagonal is perfect calibration."""
    conf, pred = probs.max(-1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    bin_idx = torch.bucketize(conf, edges[1:-1])
    acc, mean_conf, counts = [], [], []
    for b in range(n_bins):
        mask = bin_idx == b
        counts.append(int(mask.sum()))
        acc.append(correct[mask].mean().item() if mask.any() else np.nan)
        mean_conf.append(conf[mask].mean().item() if mask.any() else np.nan)
    centres = ((edges[:-1] + edges[1:]) / 2).numpy()
    fig, (ax, ax_hist) = plt.subplots(
        2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.bar(centres, acc, width=1 / n_bins, edgecolor="black", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(mean_conf, acc, "o", color="crimson", label="mean confidence per bin")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title("Reliability diagram")
    ax_hist.bar(centres, counts, width=1 / n_bins, edgecolor="black")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("confidence (max probability)")
    ax_hist.set_ylabel("images")
    return fig


def curves_figure(curves: Mapping[str, Sequence[tuple[int, float]]]) -> Figure:
    """Loss and accuracy per epoch, train and validation: ``{"train/loss": [(epoch, v)], ...}``."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in sorted(curves.items()):
        if not points:
            continue
        ax = ax_loss if name.endswith("loss") else ax_acc
        epochs, values = zip(*points, strict=True)
        ax.plot(epochs, values, marker="o", label=name)
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("Loss per epoch")
    ax_acc.set_title("Accuracy per epoch")
    return fig


def image_grid_figure(images: torch.Tensor, labels: torch.Tensor, title: str) -> Figure:
    """A grid of (normalised or raw) single-channel images with their labels."""
    n = min(len(images), 64)
    cols = 16
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, label in zip(axes.flat, images[:n], labels[:n].tolist(), strict=False):
        ax.imshow(img.squeeze().float().cpu().numpy(), cmap="gray")
        ax.set_title(str(label), fontsize=8)
    fig.suptitle(title)
    return fig


def summary_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Test accuracy vs training time, one marker per successful run, labelled by its job."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        if row.get("status") != "ok" or row.get("test_acc") is None:
            continue
        ax.scatter(row["train_seconds"], 100 * float(row["test_acc"]), s=40)
        ax.annotate(
            str(row["job"]),
            (row["train_seconds"], 100 * float(row["test_acc"])),
            fontsize=8,
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs training time, one marker per run")
    ax.grid(alpha=0.3)
    return fig


def robustness_figure(
    clean: torch.Tensor,
    examples: Mapping[str, torch.Tensor],
    accuracies: Mapping[str, float],
    clean_acc: float,
) -> Figure:
    """Left: the same digits clean and under every corruption (one row each). Right: accuracy
    per corruption, clean on top, the mean over the conditions shown as a dashed line."""
    names = list(examples)
    k = len(clean)
    fig = plt.figure(figsize=(7 + k * 0.6, 0.5 * (len(names) + 1) + 0.8))
    grid = fig.add_gridspec(len(names) + 1, k + 9, wspace=0.05, hspace=0.1)
    rows = [("clean", clean)] + [(name, examples[name]) for name in names]
    for r, (name, images) in enumerate(rows):
        for c in range(k):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(images[c].cpu().numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    bars = fig.add_subplot(grid[:, k + 3 :])
    values = [clean_acc] + [accuracies[n] for n in names]
    labels = ["clean", *names]
    y = np.arange(len(values))
    colours = ["tab:green"] + ["tab:blue"] * len(names)
    bars.barh(y, [100 * v for v in values], color=colours)
    for yi, v in enumerate(values):
        label = f"{100 * v:.1f}"
        bars.text(100 * v - 0.3, yi, label, ha="right", va="center", fontsize=7, color="white")
    mean = float(np.mean([accuracies[n] for n in names]))
    bars.axvline(100 * mean, color="black", ls="--", lw=1)
    bars.set_yticks(y, labels, fontsize=8)
    bars.invert_yaxis()
    low = min(values)
    bars.set_xlim(max(0.0, 100 * low - 5), 100)
    bars.set_xlabel(f"test accuracy (%); dashed: mean over these {100 * mean:.2f} %")
    return fig
