"""Batches of in-memory tensors, in a seeded per-epoch order, sharded over DDP ranks, resumable.

This replaces ``DataLoader`` for data that already sits in one tensor: a batch is one
fancy-index of it (no per-sample ``__getitem__``, no collate, no worker processes).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor, int]  # uint8 images [B,28,28], int64 labels [B], aug seed


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
        self.images, self.labels = images, labels
        self.batch_size, self.sampler = batch_size, sampler
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

    def mark_consumed(self, epoch_batches: float) -> None:
        """One more batch reached the model. Called from the batch-transfer hook, because
        Lightning fetches one batch ahead: counting in ``__iter__`` would be one too many.
        ``epoch_batches`` is the Trainer's ``num_training_batches`` (inf when unlimited)."""
        self.consumed += 1
        self.epoch_batches = int(min(epoch_batches, 1 << 62))

    # Lightning saves these in every checkpoint (a "stateful" loader), so a run resumed from a
    # mid-epoch checkpoint continues with the next unseen batch of the same epoch's order.
    def state_dict(self) -> dict[str, int]:
        complete = self.consumed >= self.epoch_batches
        return {"epoch": self.sampler.epoch, "consumed": self.consumed, "complete": complete}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["complete"]:  # saved at an epoch's end: the next epoch is due
            self.sampler.set_epoch(state["epoch"] + 1)
        else:  # Lightning iterates before it sets the epoch on resume: set it here
            self.sampler.set_epoch(state["epoch"])
            self._skip = state["consumed"]
