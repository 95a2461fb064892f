"""Class probabilities for uint8 MNIST-style images, from a checkpoint or an exported model.

``predict``, ``serve``, ``eval``'s robustness report and the benchmarks all load a model with
:func:`load_predictor` and call it the same way, whether it runs in PyTorch (a Lightning
checkpoint or run directory) or in ONNX Runtime (an ``.onnx`` file from ``mnist_lab.export``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_lab.augment import tta_views
from mnist_lab.checkpoint import load_net, resolve_checkpoints
from mnist_lab.errors import CheckpointError
from mnist_lab.mnist_files import normalize, to_unit


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


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU: what a consumer of the export would run."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own untyped errors for bad files
        raise CheckpointError(f"Cannot load ONNX model {path}: {err}") from None


class Predictor(ABC):
    """uint8 [N, 28, 28] images (white digit on black) in, probabilities [N, 10] out."""

    path: Path  # the model file actually loaded
    name: str  # what /health and the logs call it

    @abstractmethod
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class TorchPredictor(Predictor):
    """The net of a Lightning checkpoint (or a run directory's best one), in PyTorch."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.path = resolve_checkpoints(str(path))[0]
        self.net, config = load_net(self.path)
        self.name = f"{config['model']['_target_'].rsplit('.', 1)[-1]} ({self.path})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return predict_proba(self.net, images)


class OnnxPredictor(Predictor):
    """An exported ``.onnx`` model (normalisation inside the graph), in ONNX Runtime."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = onnx_session(self.path, threads)
        self.name = self.path.name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"input": to_unit(images).numpy()})
        return torch.from_numpy(logits).softmax(-1)


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """The right predictor for ``path``: ONNX Runtime for ``.onnx``, else PyTorch."""
    kind = OnnxPredictor if Path(path).suffix == ".onnx" else TorchPredictor
    return kind(path, threads)
