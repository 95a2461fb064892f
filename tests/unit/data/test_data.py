"""MNISTDataModule on the real MNIST files: splits, statistics, batching, sharding, augmentation."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_lab.data.augment import Augment, tta_views, warp
from mnist_lab.data.datamodule import MNISTDataModule
from mnist_lab.data.files import MEAN, RESOURCES, STD
from mnist_lab.data.loader import EpochSampler
from mnist_lab.errors import ConfigError, MNISTDataError


def test_splits_shapes_and_labels(datamodule):
    sizes = {k: len(x) for k, (x, _) in datamodule.tensors.items()}
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    for images, labels in datamodule.tensors.values():
        assert images.dtype == torch.uint8 and images.shape[1:] == (28, 28)
        assert labels.dtype == torch.int64 and labels.min() == 0 and labels.max() == 9
    # every digit is well represented in the validation split (it is a random, not a sorted, cut)
    val_counts = torch.bincount(datamodule.tensors["val"][1], minlength=10)
    assert val_counts.min() > 350


def test_split_is_disjoint_deterministic_and_configurable(datamodule):
    train_idx, val_idx = datamodule.split_indices["train"], datamodule.split_indices["val"]
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 60_000
    assert not set(train_idx.tolist()) & set(val_idx.tolist())

    again = MNISTDataModule()
    again.setup()
    assert torch.equal(again.split_indices["val"], val_idx)
    assert torch.equal(again.tensors["val"][0], datamodule.tensors["val"][0])

    other = MNISTDataModule(val_size=10_000, split_seed=7)
    other.setup()
    assert len(other.tensors["train"][0]) == 50_000 and len(other.tensors["val"][0]) == 10_000
    assert not torch.equal(other.split_indices["val"][:5_000], val_idx)


def test_normalisation_statistics(datamodule):
    """The constants are the 60,000 training images' statistics, and normalising centres them."""
    images = torch.cat([datamodule.tensors["train"][0], datamodule.tensors["val"][0]])
    x = images.double() / 255
    assert x.mean().item() == pytest.approx(MEAN, abs=5e-5)
    assert x.std().item() == pytest.approx(STD, abs=5e-5)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    datamodule.trainer = trainer
    try:
        batch = next(iter(datamodule.val_dataloader()))
        xn, y = datamodule.on_after_batch_transfer(batch, 0)
    finally:
        datamodule.trainer = None
    assert xn.shape == (1000, 1, 28, 28) and xn.dtype == torch.float32
    assert abs(xn.mean().item()) < 0.05 and abs(xn.std().item() - 1) < 0.05
    assert torch.equal(y, batch[1])


def test_batches_slice_the_whole_epoch(datamodule):
    loader = datamodule.train_dataloader()
    assert len(loader) == 55_000 // 64
    seen = []
    for images, labels, _seed in loader:
        assert images.shape == (64, 28, 28) and labels.shape == (64,)
        seen.append(labels)
    labels = torch.cat(seen)
    assert len(labels) == len(loader) * 64
    # shuffled: the first batch is not the first 128 images; the epoch covers the training set
    first = next(iter(loader))[0]
    assert not torch.equal(first, datamodule.tensors["train"][0][:64])
    full = torch.bincount(datamodule.tensors["train"][1], minlength=10)
    assert (full - torch.bincount(labels, minlength=10)).abs().sum() < 64
    # evaluation keeps every image once, in order
    val = datamodule.val_dataloader()
    assert torch.equal(torch.cat([b[0] for b in val]), datamodule.tensors["val"][0])


def test_epoch_order_depends_on_seed_and_epoch_only():
    a = EpochSampler(1000, shuffle=True, seed=1, rank=0, world_size=1, drop_last=True)
    b = EpochSampler(1000, shuffle=True, seed=1, rank=0, world_size=1, drop_last=True)
    assert torch.equal(a.indices(), b.indices())
    b.set_epoch(1)
    assert not torch.equal(a.indices(), b.indices())
    c = EpochSampler(1000, shuffle=True, seed=2, rank=0, world_size=1, drop_last=True)
    assert not torch.equal(a.indices(), c.indices())
    # augmentation seeds differ per batch and per epoch (b is at epoch 1)
    assert a.batch_seed(0) != a.batch_seed(1) and a.batch_seed(0) != b.batch_seed(0)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("train", [True, False])
def test_ranks_get_disjoint_shards(world_size, train):
    n = 1001
    shards = []
    for rank in range(world_size):
        s = EpochSampler(
            n, shuffle=train, seed=5, rank=rank, world_size=world_size, drop_last=train
        )
        s.set_epoch(3)
        shards.append(s.indices().tolist())
        assert s.num_samples == len(shards[-1])
    union = [i for shard in shards for i in shard]
    assert len(union) == len(set(union)), "ranks overlap"
    if train:  # equal shard sizes keep DDP steps in lock-step; at most world_size-1 dropped
        assert len({len(s) for s in shards}) == 1 and n - len(union) < world_size
    else:  # evaluation sees every sample exactly once
        assert sorted(union) == list(range(n))


def _centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = x.sum(dim=(-1, -2))
    return torch.stack([(x * xs).sum((-1, -2)) / mass, (x * ys).sum((-1, -2)) / mass], -1)


def test_augmentation_changes_pixels_not_shapes(datamodule):
    images = datamodule.tensors["train"][0][:256].unsqueeze(1).float() / 255
    aug = Augment(rotate_deg=10, translate_frac=0.1, scale=(0.9, 1.1))
    out = aug(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    changed = (out - images).abs().flatten(1).max(1).values > 0.1
    assert changed.float().mean() > 0.95  # (almost) every image is transformed
    # ink is moved, not destroyed: total intensity within the scale range squared, roughly
    ratio = out.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert ratio.min() > 0.7 and ratio.max() < 1.35
    # shifts stay within ±10% of 28 px (plus rotation/scale slack) and are not all zero
    shift = (_centre_of_mass(out[:, 0]) - _centre_of_mass(images[:, 0])).abs()
    assert shift.max() < 2.8 + 2.0 and shift.mean() > 0.5
    # random per sample, reproducible per seed
    again = aug(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = aug(images, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(out, other)


def test_identity_augmentation_is_exact(datamodule):
    images = datamodule.tensors["train"][0][:16].unsqueeze(1).float() / 255
    identity = Augment(rotate_deg=0, translate_frac=0, scale=(1.0, 1.0))
    assert torch.allclose(identity(images), images, atol=1e-5)


def test_augmentation_only_in_training(datamodule):
    dm = MNISTDataModule(augment={"rotate_deg": 10, "translate_frac": 0.1, "scale": [0.9, 1.1]})
    dm.tensors = datamodule.tensors
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    dm.trainer = trainer
    batch = next(iter(dm.train_dataloader()))
    trainer.training = True
    x_train, y_train = dm.on_after_batch_transfer(batch, 0)
    x_again, _ = dm.on_after_batch_transfer(batch, 0)
    trainer.validating = True
    x_eval, y_eval = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(x_train, x_again)  # the batch's seed fixes its augmentation
    assert torch.equal(y_train, batch[1]) and torch.equal(y_eval, batch[1])
    assert not torch.allclose(x_train, x_eval)
    plain = (batch[0].unsqueeze(1).float() / 255 - MEAN) / STD
    assert torch.allclose(x_eval, plain)


@pytest.mark.parametrize("off", [None, {}])  # data/augment=none composes to an empty mapping
def test_augmentation_can_be_switched_off(off):
    assert MNISTDataModule(augment=off).augment is None
    assert MNISTDataModule(augment={"rotate_deg": 5}).augment.rotate_deg == 5


@pytest.mark.parametrize("value", ["none", "off", False])
def test_augment_that_is_not_a_mapping_names_the_one_way_to_switch_it_off(value):
    with pytest.raises(ConfigError, match=r"data/augment=default\|robust\|none"):
        MNISTDataModule(augment=value)


def test_bad_augmentation_values_are_refused():
    with pytest.raises(ValueError, match=r"data\.augment\.scale"):
        MNISTDataModule(augment={"scale": [1.2, 0.8]})


def _copy_raw(shared: Path, dest: Path) -> Path:
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, _ in RESOURCES:
        shutil.copy(shared / "MNIST" / "raw" / name, raw / name)
    return raw


def test_missing_data_offline_says_where_to_put_it(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(MNISTDataError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "train-images-idx3-ubyte.gz" in msg
    assert "MNIST_DATA_DIR" in msg


def test_corrupted_file_is_refused_by_name(tmp_path, datamodule):
    raw = _copy_raw(datamodule.data_dir, tmp_path)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])  # truncated download
    with pytest.raises(MNISTDataError, match=r"t10k-labels-idx1-ubyte\.gz fails its md5"):
        MNISTDataModule(data_dir=str(tmp_path)).setup()


def test_warp_moves_pixels_exactly():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 10] = 1.0
    moved = warp(x, torch.zeros(1), torch.ones(1), torch.tensor([[2 / 28, -3 / 28]]))
    assert (moved[0, 0] > 0.99).nonzero().tolist() == [[7, 12]]  # right 2, up 3
    views = tta_views(x)
    assert len(views) == 5 and torch.equal(views[0], x)
    assert {tuple((v[0, 0] > 0.99).nonzero()[0].tolist()) for v in views[1:]} == {
        (10, 11),
        (10, 9),
        (11, 10),
        (9, 10),
    }


def test_elastic_distortion_is_a_smooth_field_of_the_stated_size():
    """A horizontal ramp (value = column / 28) turns each pixel's x-displacement into its value
    change, so the field itself can be measured through the real augmentation call."""
    n, size = 512, 28
    ramp = (torch.arange(size, dtype=torch.float32) / size).expand(n, 1, size, size).contiguous()
    still = Augment(rotate_deg=0, translate_frac=0, scale=(1.0, 1.0))
    assert torch.allclose(still(ramp), ramp, atol=1e-6)  # elastic_px=0: no field at all
    wobble = Augment(rotate_deg=0, translate_frac=0, scale=(1.0, 1.0), elastic_px=2.0)
    g = torch.Generator().manual_seed(0)
    inner = slice(6, size - 6)  # away from the zero padding at the border
    dx = ((wobble(ramp, g) - ramp) * size)[:, 0, inner, inner]  # displacement in pixels
    rms = dx.pow(2).mean().sqrt().item()
    assert 0.6 * 2.0 < rms < 0.9 * 2.0  # bilinear upsampling of the coarse field: ~0.76x
    assert dx.abs().amax() < 6 * 2.0  # no tearing
    near = torch.corrcoef(torch.stack([dx[..., :-1].flatten(), dx[..., 1:].flatten()]))[0, 1]
    far = torch.corrcoef(torch.stack([dx[..., :4].flatten(), dx[..., -4:].flatten()]))[0, 1]
    assert near > 0.9 and abs(far) < 0.2  # smooth locally, independent across the digit
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(wobble(ramp, g2), wobble(ramp, torch.Generator().manual_seed(0)))


ROBUST = {"stroke_p": 1, "blur_p": 1, "light_p": 1, "noise_p": 1, "lines_p": 1, "erase_p": 1}


def _no_geometry(**stages) -> Augment:
    return Augment(rotate_deg=0, translate_frac=0, scale=(1.0, 1.0), **stages)


@pytest.mark.parametrize("stage", sorted(ROBUST))
def test_each_robust_stage_changes_every_image_it_is_given(datamodule, stage):
    images = datamodule.tensors["train"][0][:64].unsqueeze(1).float() / 255
    out = _no_geometry(**{stage: 1.0})(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    changed = (out - images).abs().flatten(1).amax(1) > 0.05
    assert changed.float().mean() > 0.9, stage


def test_robust_stages_do_what_they_say(datamodule):
    images = datamodule.tensors["train"][0][:64].unsqueeze(1).float() / 255
    g = torch.Generator().manual_seed(0)
    ink = images.sum((1, 2, 3))
    thick = _no_geometry(stroke_p=1, stroke=1.0)(images, g).sum((1, 2, 3))
    assert ((thick > ink * 1.1) | (thick < ink * 0.9)).float().mean() > 0.8  # wider or thinner
    lit = _no_geometry(light_p=1, contrast=0.5, brightness=0.5, uneven=0.0)(images, g)
    assert lit[images == 0].mean() > 0.1  # the black page turns grey
    blurred = _no_geometry(blur_p=1, blur_sigma=(1.0, 1.5))(images, g)
    assert blurred.amax((1, 2, 3)).mean() < images.amax((1, 2, 3)).mean()  # peaks spread out
    outline = _no_geometry(stroke_p=1, outline_p=1)(images, g)
    centre = images > 0.99  # the middle of thick strokes is hollow in an outline
    assert outline[centre].mean() < 0.5


def test_degrade_p_keeps_a_clean_share_of_every_batch(datamodule):
    """Only the first `degrade_p` share of the (already shuffled) batch is degraded; the rest
    gets the geometry only, exactly as without the stages."""
    images = datamodule.tensors["train"][0][:100].unsqueeze(1).float() / 255
    geometry = Augment(rotate_deg=10)(images, torch.Generator().manual_seed(3))
    both = Augment(rotate_deg=10, degrade_p=0.3, **ROBUST)(images, torch.Generator().manual_seed(3))
    assert torch.equal(both[30:], geometry[30:])
    assert not torch.allclose(both[:30], geometry[:30])


def test_clean_last_epochs_drop_the_degradation_at_the_end_of_a_real_run(datamodule):
    """``clean_last_epochs``: the Trainer's last epochs get the geometry only. Checked through
    the datamodule's own hook in a real fit: what the net is fed per epoch."""
    aug = {"rotate_deg": 10, "degrade_p": 1.0, "clean_last_epochs": 1, **ROBUST}
    dm = MNISTDataModule(data_dir=str(datamodule.data_dir), batch_size=50, augment=aug, seed=0)
    dm.setup()
    fed: dict[int, list[torch.Tensor]] = {}

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(784, 10)

        def training_step(self, batch, _):
            fed.setdefault(self.current_epoch, []).append(batch[0])
            return torch.nn.functional.cross_entropy(self.w(batch[0].flatten(1)), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    trainer = L.Trainer(
        max_epochs=3, limit_train_batches=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Probe(), datamodule=dm)
    assert sorted(fed) == [0, 1, 2]
    # A clean digit's median pixel is the black page; light and noise lift it in epochs 0-1.
    black = float((0 - MEAN) / STD)
    median = {e: fed[e][0].flatten(1).median(1).values for e in fed}
    assert torch.allclose(median[2], torch.full_like(median[2], black))
    for epoch in (0, 1):
        assert (median[epoch] > black + 0.1).float().mean() > 0.5
    assert Augment(clean_last_epochs=2).for_epoch(0, -1).degrade_p == 1.0  # no epoch limit
    with pytest.raises(ConfigError, match="clean_last_epochs must be >= 0"):
        Augment(clean_last_epochs=-1)


def _teacher_views(datamodule, **aug):
    """A datamodule with every stage on and teacher views, 40 training digits, and those digits
    after the geometry alone as batch seed 7 draws it (unit range, not normalised)."""
    aug = {"rotate_deg": 10, **aug, **ROBUST}
    dm = MNISTDataModule(data_dir=str(datamodule.data_dir), augment=aug, teacher_views=True)
    dm.tensors = datamodule.tensors
    images, labels = datamodule.tensors["train"][0][:40], datamodule.tensors["train"][1][:40]
    geometry = Augment(rotate_deg=10)(
        images.unsqueeze(1).float() / 255, torch.Generator().manual_seed(7)
    )
    return dm, images, labels, geometry


def test_teacher_views_are_the_images_before_their_degradation(datamodule):
    """data.teacher_views: a training batch also carries each image after the geometry alone,
    the same draw as the degraded one; evaluation batches do not change."""
    dm, images, labels, geometry = _teacher_views(datamodule, degrade_p=0.5)
    x, y, clean = dm.transform((images, labels, 7), train=True)
    assert torch.allclose(clean, (geometry - MEAN) / STD, atol=1e-5)
    assert torch.allclose(x[20:], clean[20:]) and not torch.allclose(x[:20], clean[:20])
    assert torch.equal(y, labels) and len(dm.transform((images, labels, 7), train=False)) == 2


def test_twins_train_every_image_clean_and_degraded_in_the_same_step(datamodule):
    """data.augment.twins: the batch doubles to [degraded twins; clean twins] of one geometry
    draw, the labels follow, evaluation batches do not change, and a clean last epoch is the
    plain batch again."""
    dm, images, labels, geometry = _teacher_views(datamodule, twins=True)
    x, y, clean = dm.transform((images, labels, 7), train=True)
    assert x.shape == (80, 1, 28, 28) and torch.equal(y, torch.cat([labels, labels]))
    assert torch.allclose(x[40:], (geometry - MEAN) / STD, atol=1e-5)
    assert torch.allclose(clean, torch.cat([x[40:], x[40:]]))
    changed = (x[:40] - x[40:]).flatten(1).abs().amax(1) > 0.05
    assert changed.float().mean() > 0.8  # nearly every twin meets at least one stage
    assert dm.transform((images, labels, 7), train=False)[0].shape[0] == 40
    last = dm.transform((images, labels, 7), train=True, epoch=2, max_epochs=3)
    assert last[0].shape[0] == 80  # no clean_last_epochs: still twins
    plain = Augment(twins=True, clean_last_epochs=1, **ROBUST).for_epoch(2, 3)
    assert not plain.twins and plain.degrade_p == 0.0


def test_unknown_augmentation_key_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['nosie_p'\].*noise_p"):
        MNISTDataModule(augment={"nosie_p": 0.3})
    with pytest.raises(ValueError, match=r"chances must be in \[0, 1\]"):
        MNISTDataModule(augment={"noise_p": 1.5})


def test_stages_per_image_gives_each_degraded_image_exactly_k_stages():
    aug = Augment(stages_per_image=2, **ROBUST)
    stages = [(p, f) for p, f in aug._stages() if p > 0]
    picks = torch.cat(aug._picks(500, stages, torch.Generator().manual_seed(0), "cpu"), dim=1)
    assert torch.equal(picks.sum(1).flatten(), torch.full((500,), 2.0))
    assert (picks.mean(0).flatten() > 0.2).all()  # equal chances: every stage is used


def test_md5_list_agrees_with_torchvision():
    """RESOURCES is written out (no torchvision import to read MNIST); it must not drift."""
    from torchvision.datasets import MNIST

    assert list(MNIST.resources) == RESOURCES
