"""MNIST as one in-memory uint8 tensor, served by index slicing, augmented on the batch's device.

Why not ``torchvision.datasets.MNIST`` + ``DataLoader``: per-sample ``__getitem__`` + PIL
transforms + collate cost more than a small CNN's forward/backward. Here the 70,000 images
(55 MB as uint8) are loaded once; a batch is one fancy-index of that tensor, and augmentation
plus normalisation run once per batch with tensor ops (``on_after_batch_transfer``).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from mnist_lab.augment import Augment

MEAN, STD = 0.1307, 0.3081  # pixel statistics of the 60,000 training images, in [0, 1] units
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# (file name, md5) of the four official files, straight from torchvision.
RESOURCES: list[tuple[str, str]] = list(MNIST.resources)
# (images file, labels file, number of images) per split.
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}

Batch = tuple[torch.Tensor, torch.Tensor, int]  # uint8 images [B,28,28], int64 labels [B], aug seed


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] -> the model's input scale (zero mean, unit std over MNIST)."""
    return (x - MEAN) / STD


class MNISTDataError(RuntimeError):
    """The MNIST files are missing or damaged; the message says which file and how to fix it."""


def default_data_dir() -> str:
    """``$MNIST_DATA_DIR`` when set (CI, offline machines), else ``data/`` in the project."""
    return os.environ.get("MNIST_DATA_DIR") or str(PROJECT_ROOT / "data")


def _how_to_fix(raw: Path) -> str:
    names = ", ".join(name for name, _ in RESOURCES)
    return (
        f"Put the four official MNIST files ({names}) in {raw}/, or point the config key "
        "data.data_dir (or the environment variable MNIST_DATA_DIR) at a folder whose "
        "MNIST/raw/ holds them, or allow network access so torchvision can download them."
    )


def read_idx(raw: Path, name: str, expected_shape: tuple[int, ...]) -> torch.Tensor:
    """Read an IDX file (``name.gz`` if present, else the extracted ``name``) and check its header.

    The header check catches truncated or mislabelled files that would otherwise train on garbage.
    """
    path = raw / f"{name}.gz" if (raw / f"{name}.gz").exists() else raw / name
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as err:
        raise MNISTDataError(f"Cannot read {path}: {err}. {_how_to_fix(raw)}") from None
    ndim = len(expected_shape)
    header = np.frombuffer(data[: 4 * (ndim + 1)], dtype=">i4") if len(data) >= 4 else []
    expected_magic = 0x0800 + ndim  # unsigned byte data, `ndim` dimensions
    if len(header) != ndim + 1 or header[0] != expected_magic:
        raise MNISTDataError(f"{path} is not an MNIST IDX file (bad header). {_how_to_fix(raw)}")
    shape = tuple(int(d) for d in header[1:])
    body = data[4 * (ndim + 1) :]
    if shape != expected_shape or len(body) != int(np.prod(shape)):
        raise MNISTDataError(
            f"{path} holds {len(body)} bytes for shape {shape}, expected shape {expected_shape}: "
            f"the file is truncated or not the official one. {_how_to_fix(raw)}"
        )
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


class EpochSampler:
    """The index order of one epoch: a permutation seeded by (seed, epoch), sharded over ranks.

    Lightning calls ``set_epoch`` on ``loader.sampler`` each epoch (as for a DistributedSampler),
    so the order depends only on the seed and the epoch, which makes resumed runs reproducible.
    """

    def __init__(
        self, n: int, shuffle: bool, seed: int, rank: int, world_size: int, drop_last: bool
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        if self.drop_last:  # every rank gets the same count, so DDP steps stay in lock-step
            order = order[: self.n // self.world_size * self.world_size]
        return order[self.rank :: self.world_size]  # disjoint shards, together the whole epoch

    @property
    def num_samples(self) -> int:
        """This rank's share of an epoch (the length of ``indices()``), without drawing it."""
        usable = self.n // self.world_size * self.world_size if self.drop_last else self.n
        return len(range(self.rank, usable, self.world_size))

    def batch_seed(self, batch_idx: int) -> int:
        """A seed for the augmentation of one batch, unique per (seed, epoch, rank, batch)."""
        return hash((self.seed, self.epoch, self.rank, batch_idx)) & 0x7FFF_FFFF_FFFF_FFFF


class TensorBatchLoader:
    """Iterates over batches of in-memory tensors by slicing a per-epoch index permutation.

    Exposes ``sampler`` / ``batch_sampler`` like a DataLoader so Lightning can call
    ``sampler.set_epoch``; Lightning leaves non-DataLoader iterables otherwise untouched, so the
    sampler itself shards across DDP ranks.
    """

    batch_sampler = None

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, sampler: EpochSampler
    ) -> None:
        self.images, self.labels, self.batch_size, self.sampler = (
            images,
            labels,
            batch_size,
            sampler,
        )
        self.consumed = 0  # batches of the current epoch that reached the model
        self.epoch_batches = len(self)  # batches per epoch after the Trainer's limit_train_batches
        self._skip = 0

    def __len__(self) -> int:
        per_rank = self.sampler.num_samples
        if self.sampler.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.sampler.indices().to(self.images.device)
        start, self._skip = self._skip, 0
        self.consumed = start
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx], self.sampler.batch_seed(b)

    # Lightning saves these in every checkpoint (a "stateful" loader), so a run resumed from a
    # mid-epoch checkpoint continues with the next unseen batch of the same epoch's order.
    # `consumed` counts batches the model received (the datamodule marks them), not batches
    # fetched: Lightning prefetches one batch ahead.
    def state_dict(self) -> dict[str, int]:
        complete = self.consumed >= self.epoch_batches
        return {"epoch": self.sampler.epoch, "consumed": self.consumed, "complete": complete}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["complete"]:  # saved at an epoch's end: the next epoch is due
            self.sampler.set_epoch(state["epoch"] + 1)
        else:  # Lightning iterates before it sets the epoch on resume: set it here
            self.sampler.set_epoch(state["epoch"])
            self._skip = state["consumed"]


def make_augment(options: Mapping[str, Any]) -> Augment:
    """``data.augment`` -> Augment, with one clear error for an unknown key."""
    allowed = [f.name for f in fields(Augment)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"data.augment has unknown key(s) {unknown} (conf/data/augment/*.yaml); "
            f"allowed: {', '.join(allowed)}"
        )
    return Augment(**options)


class MNISTDataModule(L.LightningDataModule):
    """MNIST train/val/test splits as in-memory tensors with batched GPU/CPU augmentation."""

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5_000,
        split_seed: int = 12345,
        augment: Mapping[str, Any] | str | None = None,
        download: bool = True,
        preload_to_device: bool = True,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
        if not 0 < val_size < 60_000:
            raise ValueError(f"data.val_size must be between 1 and 59999, got {val_size}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.download = val_size, split_seed, download
        self.preload_to_device, self.seed = preload_to_device, seed
        # `data.augment=none` (or null / false / {}) switches augmentation off.
        self.augment = (
            None if augment in (None, "none", False) or not augment else make_augment(augment)
        )
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_loader: TensorBatchLoader | None = None
        self._resume_state: dict[str, int] | None = None
        self.split_indices: dict[str, torch.Tensor] = {}

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def prepare_data(self) -> None:
        """Check the official files' md5 (offline), or download them through torchvision."""
        raw = self.raw_dir
        for name, md5 in RESOURCES:
            if (raw / name).exists() and not check_integrity(str(raw / name), md5):
                raise MNISTDataError(
                    f"{raw / name} fails its md5 check (expected {md5}): it is truncated or "
                    f"altered. Delete it and run again to re-download, or replace it with the "
                    f"official file. {_how_to_fix(raw)}"
                )
        missing = [
            n for n, _ in RESOURCES if not (raw / n).exists() and not (raw / n[:-3]).exists()
        ]
        if not missing:
            return
        if not self.download:
            raise MNISTDataError(f"MNIST files missing: {', '.join(missing)}. {_how_to_fix(raw)}")
        try:
            for train in (True, False):
                MNIST(str(self.data_dir), train=train, download=True)
        except Exception as err:  # torchvision raises RuntimeError/URLError after all mirrors fail
            raise MNISTDataError(
                f"MNIST is not in {raw}/ and could not be downloaded ({type(err).__name__}: "
                f"{err}). {_how_to_fix(raw)}"
            ) from None

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        self.prepare_data()  # cheap when present; makes setup() safe to call without a Trainer
        raw = self.raw_dir
        loaded = {}
        for split, (img_name, lbl_name, n) in SPLITS.items():
            loaded[split] = (
                read_idx(raw, img_name, (n, 28, 28)),
                read_idx(raw, lbl_name, (n,)).long(),
            )
        if loaded["train"][1].max() > 9 or loaded["test"][1].max() > 9:
            raise MNISTDataError(f"MNIST labels outside 0..9 in {raw}. {_how_to_fix(raw)}")
        images, labels = loaded["train"]
        # The validation split depends on `split_seed` only, so every run sees the same val set.
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        self.split_indices = {"train": train_idx, "val": val_idx}  # into the 60,000 files' order
        self.tensors = {
            "train": (images[train_idx], labels[train_idx]),
            "val": (images[val_idx], labels[val_idx]),
            "test": loaded["test"],
        }
        device = self._device()
        if self.preload_to_device and device.type != "cpu":
            # Whole dataset resident on the accelerator: batches never cross the PCIe bus.
            self.tensors = {k: (x.to(device), y.to(device)) for k, (x, y) in self.tensors.items()}

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, batch_size: int, train: bool) -> TensorBatchLoader:
        images, labels = self.tensors[split]
        rank, world = self._rank_world()
        sampler = EpochSampler(len(images), train, self.seed, rank, world, drop_last=train)
        return TensorBatchLoader(images, labels, batch_size, sampler)

    def train_dataloader(self) -> TensorBatchLoader:
        self._train_loader = self._loader("train", self.batch_size, train=True)
        if self._resume_state is not None:
            self._train_loader.load_state_dict(self._resume_state)
            self._resume_state = None
        return self._train_loader

    # The loader's position also travels as datamodule state: Lightning restores datamodules
    # before it builds the loader, while it restores loop-held loader state only after the
    # scheduler set-up has already built it (OneCycle's total_steps), too late to apply.
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_state = state_dict.get("train_loader")

    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", self.eval_batch_size, train=False)

    def predict_dataloader(self) -> TensorBatchLoader:
        """The test set again: ``Trainer.predict`` returns its logits in order (eval reports)."""
        return self.test_dataloader()

    def transform(self, batch: Batch, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch -> normalised [B,1,28,28] floats, augmented (seeded per batch) if train."""
        images, labels, seed = batch
        x = images.unsqueeze(1).float().div_(255)
        if train and self.augment is not None:
            g = torch.Generator(device=x.device).manual_seed(seed)
            x = self.augment(x, generator=g)
        return normalize(x), labels

    def on_after_batch_transfer(
        self, batch: Batch, dataloader_idx: int
    ) -> tuple[torch.Tensor, ...]:
        """Augment (training only) and normalise a whole batch at once on its device."""
        trainer = self.trainer
        training = trainer is not None and trainer.training
        if training and self._train_loader is not None:
            self._train_loader.consumed += 1
            self._train_loader.epoch_batches = int(min(trainer.num_training_batches, 1 << 62))
        return self.transform(batch, train=training)
