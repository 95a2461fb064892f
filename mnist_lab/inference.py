"""Batched inference on uint8 MNIST-format images, optionally with test-time augmentation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mnist_lab.augment import tta_views
from mnist_lab.checkpoint import CheckpointError, load_net, resolve_checkpoints
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


class Predictor:
    """Class probabilities for uint8 MNIST-style images, from a checkpoint or an exported model.

    ``predict``, ``serve`` and the benchmarks use this one interface, whether the model is a
    Lightning checkpoint (PyTorch) or an ``.onnx`` file from ``mnist_lab.export`` (ONNX Runtime).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self._session = None
        if self.path.suffix == ".onnx":
            import onnxruntime as ort

            if not self.path.is_file():
                raise CheckpointError(f"ONNX model not found: {self.path}")
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            try:
                self._session = ort.InferenceSession(
                    str(self.path), options, providers=["CPUExecutionProvider"]
                )
            except Exception as err:  # ORT raises its own untyped errors for bad files
                raise CheckpointError(f"Cannot load ONNX model {self.path}: {err}") from None
            self.name = self.path.name
        else:
            if threads:
                torch.set_num_threads(threads)
            self.path = resolve_checkpoints(str(self.path))[0]
            self.net, config = load_net(self.path)
            self.name = f"{config['model']['_target_'].rsplit('.', 1)[-1]} ({self.path})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 28, 28] (white digit on black) -> probabilities [N, 10]."""
        if self._session is None:
            return predict_proba(self.net, images)
        x = images.unsqueeze(1).float().div_(255).numpy()
        (logits,) = self._session.run(["logits"], {"input": x})
        return torch.from_numpy(logits).softmax(-1)
