"""Where the project, its configs and the MNIST files are. Imports nothing heavy (no Hydra, no
torch): the IDX file reader and the torch-free server both need these answers."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PROJECT_ROOT / "conf")


def default_data_dir() -> str:
    """``$MNIST_DATA_DIR`` when set (CI, offline machines), else ``data/`` in the project."""
    return os.environ.get("MNIST_DATA_DIR") or str(PROJECT_ROOT / "data")


# The model that ships with the repo (`python -m mnist_lab.ship` rebuilds it, with its card
# beside it): what `predict` and `serve` answer with when no ckpt_path is given.
SHIPPED_MODEL = Path(__file__).resolve().parent / "serving" / "model" / "digits.onnx"
