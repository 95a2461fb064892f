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
