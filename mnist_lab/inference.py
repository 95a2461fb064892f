"""Batched inference on uint8 MNIST-format images, optionally with test-time augmentation."""

from __future__ import annotations

import torch
from torch import nn

from mnist_lab.augment import tta_views
from mnist_lab.data import normalize


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
        x = images[start : start + batch_size].to(device).unsqueeze(1).float().div_(255)
        views = tta_views(x) if tta else [x]
        probs = torch.stack([net(normalize(v)).float().softmax(-1) for v in views]).mean(0)
        out.append(probs.cpu())
    return torch.cat(out)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(-1) == labels.cpu()).float().mean().item()
