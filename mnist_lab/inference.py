"""PyTorch inference: probabilities (with optional TTA) from a net, and the checkpoint
predictor. The ONNX side, the common interface and ``load_predictor`` live in
:mod:`mnist_lab.predictor`, which imports no torch (re-exported here for torch-side callers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_lab.augment import tta_views
from mnist_lab.checkpoint import load_net, resolve_checkpoints
from mnist_lab.mnist_files import normalize, to_unit
from mnist_lab.predictor import OnnxPredictor, Predictor, load_predictor, onnx_session

__all__ = [
    "OnnxPredictor", "Predictor", "TorchPredictor", "accuracy", "load_predictor",
    "onnx_session", "predict_proba",
]  # fmt: skip


@torch.inference_mode()
def predict_proba(
    net: nn.Module,
    images: torch.Tensor,
    tta: bool = False,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Class probabilities [N, 10] for uint8 images [N, 28, 28]; with ``tta`` the mean over the
    image and its 1-pixel shifts (softmax first, then mean: each view votes with its confidence).
    """
    net = net.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_unit(images[start : start + batch_size].to(device))
        views = tta_views(x) if tta else [x]
        probs = torch.stack([net(normalize(v)).float().softmax(-1) for v in views]).mean(0)
        out.append(probs.cpu())
    return torch.cat(out)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(-1) == labels.cpu()).float().mean().item()


class TorchPredictor(Predictor):
    """The net of a Lightning checkpoint (or a run directory's best one), in PyTorch."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.path = resolve_checkpoints(str(path))[0]
        self.net, config = load_net(self.path)
        self.name = f"{config['model']['_target_'].rsplit('.', 1)[-1]} ({self.path})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return predict_proba(self.net, torch.as_tensor(images))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self(torch.from_numpy(images)).numpy()
