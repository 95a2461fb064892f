"""Class probabilities for uint8 MNIST-style images: the :class:`Predictor` protocol, and its
ONNX Runtime implementation for an ``.onnx`` file from ``mnist_lab.export``.

``predict``, ``serve``, the robustness suite and the benchmarks call every model the same way,
whether it runs in ONNX Runtime (here) or in PyTorch (a Lightning checkpoint or run directory,
:class:`mnist_lab.evaluation.inference.TorchPredictor`); ``mnist_lab.evaluation.loading``
picks one for a path. This module imports neither torch nor Lightning: serving an ``.onnx``
file needs only ONNX Runtime and numpy (about 1/4 of the memory, a start in about a second).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mnist_lab.errors import CheckpointError


class Predictor(Protocol):
    """uint8 [N, 28, 28] images (white digit on black) in, probabilities [N, 10] out, as numpy
    arrays (torch-side callers: :func:`mnist_lab.evaluation.inference.probabilities`)."""

    path: Path  # the model file actually loaded
    name: str  # what /health and the logs call it

    def probabilities(self, images: np.ndarray) -> np.ndarray: ...


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


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def model_card(path: Path) -> dict[str, Any]:
    """What ``export`` (and ``ship``, for the shipped model) wrote beside an ``.onnx`` file:
    parity, accuracy, size; {} when there is none."""
    card = path.with_name(path.name + ".json")
    try:
        return dict(json.loads(card.read_text()))
    except (OSError, ValueError):
        return {}


class OnnxPredictor:
    """An exported ``.onnx`` model (normalisation inside the graph), in ONNX Runtime."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = onnx_session(self.path, threads)
        self.name = self.path.name
        card = model_card(self.path)
        if "recipe" in card:  # the shipped model says what it is
            self.name += f" (shipped: {card['recipe']} seed {card['seed']}, "
            self.name += f"test acc {card['test/acc']:.2%})"

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        x = images[:, None].astype(np.float32) / 255.0  # the graph normalises from [0, 1]
        (logits,) = self.session.run(["logits"], {"input": x})
        return softmax(logits.astype(np.float32))
