"""The one inference function: class probabilities of a net (or an ensemble of nets) on uint8
images, with optional test-time augmentation.

eval, ensemble, the robustness suite, export's parity check, the checkpoint predictor
(predict, serve) and the benchmarks all get their probabilities from :func:`predict_proba`,
so a change to the input scale, TTA or batching reaches every number at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_lab.data.augment import tta_views
from mnist_lab.data.files import normalize, to_unit
from mnist_lab.serving.predictor import Predictor
from mnist_lab.training.checkpoint import load_net, resolve_checkpoints


@torch.inference_mode()
def predict_proba(
    net: nn.Module | Sequence[nn.Module],
    images: torch.Tensor,
    tta: bool = False,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Class probabilities [N, 10] for uint8 images [N, 28, 28], in float32.

    ``tta``: the mean over the image and its 1-pixel shifts; several nets: the mean over the
    nets. Softmax first, then the mean: each view and each member votes with its confidence.
    """
    nets = [net] if isinstance(net, nn.Module) else list(net)
    nets = [n.to(device).eval() for n in nets]
    out = []
    for start in range(0, len(images), batch_size):
        x = to_unit(images[start : start + batch_size].to(device))
        views = [normalize(v) for v in (tta_views(x) if tta else [x])]
        probs = torch.stack([n(v).float().softmax(-1) for n in nets for v in views]).mean(0)
        out.append(probs.cpu())
    return torch.cat(out) if out else torch.empty(0, 10)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(-1) == labels.cpu()).float().mean().item()


def probabilities(predictor: Predictor, images: torch.Tensor) -> torch.Tensor:
    """Any predictor (ONNX Runtime or PyTorch) on a uint8 image tensor, as a tensor (numpy
    and torch share the memory both ways: no copy for a checkpoint's net)."""
    return torch.from_numpy(predictor.probabilities(images.cpu().numpy()))


class TorchPredictor:
    """The net of a Lightning checkpoint (or a run directory's best one), in PyTorch.

    ``loaded``: the net and run config already loaded from ``path`` (eval's robustness report
    reuses the net it tested: one checkpoint load, not two).
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        loaded: tuple[nn.Module, dict[str, Any]] | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.path = Path(path) if loaded else resolve_checkpoints(str(path))[0]
        self.net, config = loaded or load_net(self.path)
        self.name = f"{config['model']['_target_'].rsplit('.', 1)[-1]} ({self.path})"

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return predict_proba(self.net, torch.from_numpy(images)).numpy()
