"""Classification metrics over a whole prediction set, each from torchmetrics."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

NUM_CLASSES = 10
ECE_BINS = 15


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Overall accuracy, macro F1, expected calibration error, confusion matrix and per-class
    support / correct / accuracy / precision / recall for probabilities [N, 10] and labels [N]."""
    labels = labels.cpu()
    probs = probs.float().cpu()
    confusion = multiclass_confusion_matrix(probs, labels, num_classes=NUM_CLASSES)
    precision = multiclass_precision(probs, labels, average=None, num_classes=NUM_CLASSES)
    recall = multiclass_recall(probs, labels, average=None, num_classes=NUM_CLASSES)
    per_class = {
        str(d): {
            "support": int(confusion[d].sum()),
            "correct": int(confusion[d, d]),
            "accuracy": float(confusion[d, d] / confusion[d].sum().clamp(min=1)),
            "precision": float(precision[d]),
            "recall": float(recall[d]),
        }
        for d in range(NUM_CLASSES)
    }
    return {
        "test/acc": float(
            multiclass_accuracy(probs, labels, average="micro", num_classes=NUM_CLASSES)
        ),
        "test/f1_macro": float(
            multiclass_f1_score(probs, labels, average="macro", num_classes=NUM_CLASSES)
        ),
        "test/ece": float(
            multiclass_calibration_error(probs, labels, n_bins=ECE_BINS, num_classes=NUM_CLASSES)
        ),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
    }


def per_class_markdown(per_class: dict[str, dict[str, float]]) -> str:
    """digit | support | correct | accuracy, plus the total row (which is the overall accuracy)."""
    lines = ["| digit | support | correct | accuracy |", "|---:|---:|---:|---:|"]
    for digit, row in per_class.items():
        lines.append(f"| {digit} | {row['support']} | {row['correct']} | {row['accuracy']:.4f} |")
    support = sum(r["support"] for r in per_class.values())
    correct = sum(r["correct"] for r in per_class.values())
    lines.append(f"| all | {support} | {correct} | {correct / max(support, 1):.4f} |")
    return "\n".join(lines) + "\n"
