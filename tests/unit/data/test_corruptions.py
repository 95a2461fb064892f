"""The corruption suites (mnist_lab.data.corruptions): MNIST-C's fifteen corruptions and the
six cross-source conditions, seeded, each doing what its name says."""

from __future__ import annotations

import pytest
import torch

from mnist_lab.data.corruptions import CONDITIONS, CORRUPTIONS, CROSS_SOURCE, corrupt

RANDOM = {
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "rotate",
    "translate",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "lowres",
    "slant",
}


@pytest.fixture(scope="module")
def digits(datamodule) -> torch.Tensor:
    return datamodule.tensors["test"][0][:200]


def centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    """[N, 2] as (row, col)."""
    w = x.float()
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = w.sum((1, 2))
    return torch.stack([(w * rows).sum((1, 2)) / mass, (w * cols).sum((1, 2)) / mass], 1)


def extent(x: torch.Tensor) -> torch.Tensor:
    """Height of each digit's ink (rows with any pixel > 64)."""
    rows = (x > 64).any(dim=2).float()
    idx = torch.arange(28.0)
    top = torch.where(rows > 0, idx, 99.0).amin(1)
    bottom = torch.where(rows > 0, idx, -1.0).amax(1)
    return bottom - top + 1


def test_the_suite_has_mnist_c_s_fifteen_corruptions():
    assert len(CORRUPTIONS) == 15
    assert {"fog", "canny_edges", "zigzag", "glass_blur", "stripe"} <= set(CORRUPTIONS)
    assert set(CROSS_SOURCE) == {
        "lowres", "box_fill", "usps_frame", "thick_pen", "thin_pen", "slant", "binarize"
    }  # fmt: skip
    assert RANDOM.issubset(CONDITIONS)  # the test below checks each name's seeding
    assert not set(CORRUPTIONS) & set(CROSS_SOURCE)  # the two means never mix


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_each_corruption_changes_the_digits_reproducibly(name, digits):
    out = corrupt(name, digits, seed=0)
    assert out.shape == digits.shape and out.dtype == torch.uint8
    changed = (out.int() - digits.int()).abs().flatten(1).amax(1) > 40
    assert changed.float().mean() > 0.9, f"{name} left most digits as they were"
    assert torch.equal(out, corrupt(name, digits, seed=0))  # seeded
    # the random ones change with the seed; the deterministic ones ignore it
    assert torch.equal(out, corrupt(name, digits, seed=1)) is (name not in RANDOM)


def test_corruptions_do_what_their_names_say(digits):
    x = digits.int()
    bright = corrupt("brightness", digits)
    assert (bright[digits == 0] == 128).all()  # black background -> mid grey (+0.5)
    stripe = corrupt("stripe", digits).int()
    assert torch.equal(stripe[..., :7], 255 - x[..., :7]) and torch.equal(
        stripe[..., 7:21], x[..., 7:21]
    )
    impulse = corrupt("impulse_noise", digits)
    hit = ((impulse == 0) | (impulse == 255)) & (impulse != digits)
    assert 0.10 < hit.float().mean() < 0.17  # 17 % set, some to the value they had
    shot = corrupt("shot_noise", digits)
    assert (shot[digits == 0] == 0).all()  # no photons where there is no light
    scaled = corrupt("scale", digits)
    assert 0.6 < (extent(scaled) / extent(digits)).median() < 0.8
    moved = centre_of_mass(corrupt("translate", digits)) - centre_of_mass(digits)
    assert torch.allclose(moved.abs().median(0).values, torch.tensor([3.0, 3.0]), atol=0.5)
    edges = corrupt("canny_edges", digits)
    assert set(edges.unique().tolist()) <= {0, 255}
    fog = corrupt("fog", digits).float()
    ink, paper = fog[digits > 200].mean(), fog[digits == 0].mean()
    assert paper > 40 and ink - paper < 0.45 * 255  # grey cloud, a quarter of the contrast left


def test_unknown_corruption_names_the_choices(digits):
    with pytest.raises(ValueError, match=r"unknown corruption 'snow'.*fog"):
        corrupt("snow", digits)


def ink_box(img: torch.Tensor) -> tuple[int, int, float, float]:
    """Height, width and the box's centre (row, col) of one digit's ink (> 30)."""
    ys, xs = torch.nonzero(img > 30, as_tuple=True)
    h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
    return h, w, float(ys.max() + ys.min()) / 2, float(xs.max() + xs.min()) / 2


def test_cross_source_conditions_do_what_their_names_say(digits):
    ink = (digits > 127).sum((1, 2)).float()
    binary = corrupt("binarize", digits)
    assert set(binary.unique().tolist()) <= {0, 255}
    assert torch.equal(binary > 0, digits >= 128)  # one threshold at mid-grey, nothing moved
    thick, thin = corrupt("thick_pen", digits), corrupt("thin_pen", digits)
    assert ((thick > 127).sum((1, 2)) / ink).median() > 1.8  # much wider strokes
    thin_ink = (thin > 127).sum((1, 2)) / ink
    assert 0.3 < thin_ink.median() < 0.85 and (thin.flatten(1).amax(1) == 255).all()
    # Low resolution keeps where the ink is but smears its edges: total variation drops.
    low = corrupt("lowres", digits).float()
    assert (centre_of_mass(low) - centre_of_mass(digits)).abs().median() < 0.5
    tv = lambda x: x.float().diff(dim=2).abs().sum((1, 2))  # noqa: E731
    assert (tv(low) / tv(digits)).median() < 0.8
    # Box filling: the longer side stays 20 px, the shorter one is stretched (at most 2x the
    # aspect-kept fit), and the box, not the centre of mass, is centred.
    filled = corrupt("box_fill", digits)
    stretched = 0
    for before, after in zip(digits, filled, strict=True):
        h0, w0, _, _ = ink_box(before)
        h, w, row, col = ink_box(after)
        assert max(h, w) in (19, 20, 21) and abs(row - 13.5) <= 1 and abs(col - 13.5) <= 1
        fit = 20 / max(h0, w0)
        assert min(h, w) <= 2 * fit * min(h0, w0) + 2
        stretched += min(h, w) > fit * min(h0, w0) + 2
    assert stretched > 0.5 * len(digits)
    # USPS's frame: the digit fills the image (aspect kept), no 4-px border left.
    framed = corrupt("usps_frame", digits)
    heights = torch.tensor([ink_box(img)[0] for img in framed]).float()
    assert heights.median() >= 26
    # Slant: every digit moves (shear and tilt) but its ink mass stays.
    slanted = corrupt("slant", digits)
    assert ((slanted.float().sum((1, 2)) / digits.float().sum((1, 2))) - 1).abs().median() < 0.1
