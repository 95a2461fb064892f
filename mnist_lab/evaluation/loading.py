"""Which predictor answers for a model file: ONNX Runtime for ``.onnx``, else PyTorch.

Imports no torch itself, so ``predict`` and ``serve`` on an ``.onnx`` file never load it; a
checkpoint brings torch in with :mod:`mnist_lab.evaluation.inference`.
"""

from __future__ import annotations

from pathlib import Path

from mnist_lab.serving.predictor import OnnxPredictor, Predictor


def load_predictor(path: str | Path, threads: int | None = None) -> Predictor:
    """The right predictor for ``path``: an ``.onnx`` file, a checkpoint or a run directory."""
    if Path(path).suffix == ".onnx":
        return OnnxPredictor(path, threads)
    from mnist_lab.evaluation.inference import TorchPredictor  # torch only for checkpoints

    return TorchPredictor(path, threads)
