"""The MNIST LightningDataModule: the whole dataset as in-memory uint8 tensors, batched by
index slicing, augmented and normalised once per batch on the batch's device.

Why not ``torchvision.datasets.MNIST`` + ``DataLoader``: per-sample ``__getitem__`` + PIL
transforms + collate cost more than a small CNN's forward/backward. Here the 70,000 images
(55 MB as uint8) are loaded once (``mnist_files``); a batch is one fancy-index of that tensor
(``loader``), and augmentation plus normalisation run once per batch with tensor ops
(``on_after_batch_transfer``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mnist_lab.data.augment import Augment
from mnist_lab.data.files import (
    check_val_size,
    ensure_files,
    normalize,
    raw_dir,
    read_splits,
    to_unit,
)
from mnist_lab.data.loader import Batch, EpochSampler, TensorBatchLoader
from mnist_lab.errors import ConfigError
from mnist_lab.paths import default_data_dir


def make_augment(options: Mapping[str, Any]) -> Augment:
    """``data.augment`` -> Augment, with one clear error for an unknown key."""
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"data.augment={options!r} is not an augmentation: pick one with "
            "data/augment=default|robust|none (conf/data/augment/), none switches it off"
        )
    allowed = [f.name for f in fields(Augment)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
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
        augment: Mapping[str, Any] | None = None,
        download: bool = True,
        preload_to_device: bool = True,
        seed: int = 42,
        teacher_views: bool = False,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
        check_val_size(val_size)  # refused as the config is instantiated, before any data
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.download = val_size, split_seed, download
        self.preload_to_device, self.seed = preload_to_device, seed
        # Training batches also carry each image before its degradation (geometry only): a
        # distillation teacher trained on clean digits reads those (module.teacher).
        self.teacher_views = teacher_views
        # `data/augment=none` (an empty mapping) switches augmentation off.
        self.augment = (
            None
            if augment is None or (isinstance(augment, Mapping) and not augment)
            else make_augment(augment)
        )
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_loader: TensorBatchLoader | None = None
        self._resume_state: dict[str, int] | None = None
        self.split_indices: dict[str, torch.Tensor] = {}

    @property
    def raw_dir(self) -> Path:
        return raw_dir(self.data_dir)

    def prepare_data(self) -> None:
        """Check the official files' md5 (offline), or download them through torchvision."""
        ensure_files(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        raw = ensure_files(self.data_dir, self.download)  # md5 once, for both files
        # The validation split depends on `split_seed` only, so every run sees the same val set;
        # split_indices point into the 60,000 training files' order.
        self.tensors, self.split_indices = read_splits(raw, self.val_size, self.split_seed)
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
        """The test set again: ``Trainer.predict`` returns its logits in order."""
        return self.test_dataloader()

    def transform(
        self, batch: Batch, train: bool, epoch: int = 0, max_epochs: int = 1
    ) -> tuple[torch.Tensor, ...]:
        """uint8 batch -> normalised [B,1,28,28] floats, augmented (seeded per batch) if train,
        as the augmentation runs in ``epoch`` of ``max_epochs``; with ``teacher_views`` a
        training batch is (images, labels, the images before their degradation)."""
        images, labels, seed = batch
        x = clean = to_unit(images)
        if train and self.augment is not None:
            g = torch.Generator(device=x.device).manual_seed(seed)
            x, clean = self.augment.for_epoch(epoch, max_epochs).views(x, generator=g)
            labels = labels.repeat(len(x) // len(labels))  # twins: each image twice
        if train and self.teacher_views:
            return normalize(x), labels, normalize(clean)
        return normalize(x), labels

    def on_after_batch_transfer(
        self, batch: Batch, dataloader_idx: int
    ) -> tuple[torch.Tensor, ...]:
        """Augment (training only) and normalise a whole batch at once on its device."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return self.transform(batch, train=False)
        if self._train_loader is not None:
            self._train_loader.mark_consumed(trainer.num_training_batches)
        epoch, max_epochs = trainer.current_epoch, trainer.max_epochs or 1
        return self.transform(batch, train=True, epoch=epoch, max_epochs=max_epochs)
