"""The four official MNIST files (where they live, their md5, IDX parsing), the pixel scale,
and the three splits every tool shares.

Everything that reads MNIST from disk goes through here: the datamodule (training) through
:func:`read_splits`, and every other caller (eval, ensemble, export, robustness, benchmarks,
the load test, the photo renderer) through :func:`load_split`. The validation images are the
same 5,000 of the 60,000 training files for everyone: they depend on ``split_seed`` only.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch

from mnist_lab.errors import ConfigError, MNISTDataError
from mnist_lab.paths import default_data_dir

MEAN, STD = 0.1307, 0.3081  # pixel statistics of the 60,000 training images, in [0, 1] units
# (file name, md5) of the four official files, as torchvision lists them (a test checks they
# agree). Written out so that reading MNIST does not import torchvision (~1 s at start-up,
# which `predict` and `serve` would pay on every launch); it is imported to download only.
RESOURCES: list[tuple[str, str]] = [
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
]
# (images file, labels file, number of images) of the two official files.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, 28, 28] -> float pixels [N, 1, 28, 28] in [0, 1]: what models and
    exported graphs take (white digit on black)."""
    return images.unsqueeze(1).float().div_(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] -> the model's input scale (zero mean, unit std over MNIST)."""
    return (x - MEAN) / STD


def raw_dir(data_dir: str | Path | None = None) -> Path:
    """``<data_dir>/MNIST/raw``, torchvision's layout; ``data_dir`` defaults as the configs do."""
    return Path(data_dir or default_data_dir()).expanduser().resolve() / "MNIST" / "raw"


def how_to_fix(raw: Path) -> str:
    names = ", ".join(name for name, _ in RESOURCES)
    return (
        f"Put the four official MNIST files ({names}) in {raw}/, or point the config key "
        "data.data_dir (or the environment variable MNIST_DATA_DIR) at a folder whose "
        "MNIST/raw/ holds them, or allow network access so torchvision can download them."
    )


def ensure_files(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Check the official files' md5 (offline), or download them through torchvision; returns
    the raw directory."""
    raw = raw_dir(data_dir)
    for name, md5 in RESOURCES:
        if (raw / name).exists() and hashlib.md5((raw / name).read_bytes()).hexdigest() != md5:
            raise MNISTDataError(
                f"{raw / name} fails its md5 check (expected {md5}): it is truncated or "
                f"altered. Delete it and run again to re-download, or replace it with the "
                f"official file. {how_to_fix(raw)}"
            )
    missing = [n for n, _ in RESOURCES if not (raw / n).exists() and not (raw / n[:-3]).exists()]
    if not missing:
        return raw
    if not download:
        raise MNISTDataError(f"MNIST files missing: {', '.join(missing)}. {how_to_fix(raw)}")
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(str(raw.parents[1]), train=train, download=True)
    except Exception as err:  # torchvision raises RuntimeError/URLError after all mirrors fail
        raise MNISTDataError(
            f"MNIST is not in {raw}/ and could not be downloaded ({type(err).__name__}: "
            f"{err}). {how_to_fix(raw)}"
        ) from None
    return raw


def read_idx(raw: Path, name: str, expected_shape: tuple[int, ...]) -> torch.Tensor:
    """Read an IDX file (``name.gz`` if present, else the extracted ``name``) and check its header.

    The header check catches truncated or mislabelled files that would otherwise train on garbage.
    The decoded file is kept for the process, keyed by its path, size and modification time:
    the jobs of a sweep or an Optuna study in one process, and the teachers a distillation run
    trains, decompress the files once (~0.3 s a run); each caller gets its own copy (~10 ms).
    """
    path = raw / f"{name}.gz" if (raw / f"{name}.gz").exists() else raw / name
    try:
        stat = path.stat()
    except OSError as err:
        raise MNISTDataError(f"Cannot read {path}: {err}. {how_to_fix(raw)}") from None
    return _decoded(str(path), stat.st_size, stat.st_mtime_ns, expected_shape).clone()


@functools.lru_cache(maxsize=8)  # the four official files, and a few more
def _decoded(file: str, size: int, mtime_ns: int, expected_shape: tuple[int, ...]) -> torch.Tensor:
    path = Path(file)
    raw = path.parent
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as err:
        raise MNISTDataError(f"Cannot read {path}: {err}. {how_to_fix(raw)}") from None
    ndim = len(expected_shape)
    header = np.frombuffer(data[: 4 * (ndim + 1)], dtype=">i4") if len(data) >= 4 else np.empty(0)
    expected_magic = 0x0800 + ndim  # unsigned byte data, `ndim` dimensions
    if len(header) != ndim + 1 or header[0] != expected_magic:
        raise MNISTDataError(f"{path} is not an MNIST IDX file (bad header). {how_to_fix(raw)}")
    shape = tuple(int(d) for d in header[1:])
    body = data[4 * (ndim + 1) :]
    if shape != expected_shape or len(body) != int(np.prod(shape)):
        raise MNISTDataError(
            f"{path} holds {len(body)} bytes for shape {shape}, expected shape {expected_shape}: "
            f"the file is truncated or not the official one. {how_to_fix(raw)}"
        )
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def read_file(raw: Path, file: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] and int64 labels [N] of the official ``train`` (60,000) or
    ``test`` (10,000) file in ``raw`` (already checked by :func:`ensure_files`)."""
    img_name, lbl_name, n = FILES[file]
    images, labels = read_idx(raw, img_name, (n, 28, 28)), read_idx(raw, lbl_name, (n,)).long()
    if labels.max() > 9:
        raise MNISTDataError(f"MNIST labels outside 0..9 in {raw}. {how_to_fix(raw)}")
    return images, labels


SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("test", "val")  # what a trained model is scored on: never its training images
VAL_SIZE, SPLIT_SEED = 5_000, 12345  # conf/data/mnist.yaml's data.val_size, data.split_seed


def check_val_size(val_size: int) -> None:
    """The validation split must leave images on both sides of the 60,000 training files."""
    n = FILES["train"][2]
    if not 0 < val_size < n:
        raise ConfigError(f"data.val_size must be between 1 and {n - 1}, got {val_size}")


def holdout(val_size: int = VAL_SIZE, split_seed: int = SPLIT_SEED) -> dict[str, torch.Tensor]:
    """Indices into the 60,000 training files of the ``train`` and ``val`` splits: a seeded
    permutation, so a run's validation images can be rebuilt from its config alone."""
    check_val_size(val_size)
    perm = torch.randperm(FILES["train"][2], generator=torch.Generator().manual_seed(split_seed))
    return {"train": perm[val_size:], "val": perm[:val_size]}


def read_splits(
    raw: Path, val_size: int = VAL_SIZE, split_seed: int = SPLIT_SEED
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor]]:
    """``train``, ``val`` and ``test`` (images, labels), and the train/val indices into the
    training files."""
    images, labels = read_file(raw, "train")
    indices = holdout(val_size, split_seed)
    tensors = {name: (images[idx], labels[idx]) for name, idx in indices.items()}
    return tensors | {"test": read_file(raw, "test")}, indices


def load_split(
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    val_size: int = VAL_SIZE,
    split_seed: int = SPLIT_SEED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split (``train``: the 55,000 training images, ``val``: the 5,000 held out from
    them, ``test``: the official 10,000), md5-checked first."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not a split: choose one of {', '.join(SPLITS)}")
    raw = ensure_files(data_dir, download)
    if split == "test":
        return read_file(raw, "test")
    images, labels = read_file(raw, "train")
    idx = holdout(val_size, split_seed)[split]
    return images[idx], labels[idx]
