"""Batched, per-sample random affine augmentation on whatever device the batch lives on.

One ``affine_grid`` + ``grid_sample`` call warps the whole batch, each image with its own
random rotation, scale and translation. This replaces the per-sample PIL transforms of the
usual tutorials, which cost more than the model itself at MNIST scale (see docs/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AffineAugment:
    """Random rotation (± ``rotate_deg``), isotropic scale within ``scale`` and shift
    (± ``translate_frac`` of the image size), drawn independently for every image of the batch.

    Works on float images in [0, 1] with a black background (zeros padding), before normalisation.
    """

    rotate_deg: float = 10.0
    translate_frac: float = 0.1
    scale: Sequence[float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not (0 < lo <= hi):
            raise ValueError(
                "data.augment.scale must be [low, high] with 0 < low <= high, "
                f"got {list(self.scale)}"
            )
        if self.rotate_deg < 0 or not (0 <= self.translate_frac < 1):
            raise ValueError(
                "data.augment.rotate_deg must be >= 0 and data.augment.translate_frac in [0, 1), "
                f"got rotate_deg={self.rotate_deg}, translate_frac={self.translate_frac}"
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        # Random numbers are drawn in float32 on the batch's device: no host round-trip.
        r = torch.rand(n, 4, generator=generator, device=x.device, dtype=torch.float32)
        angle = (r[:, 0] * 2 - 1) * math.radians(self.rotate_deg)
        lo, hi = self.scale
        scale = lo + (hi - lo) * r[:, 1]
        # affine_grid maps output coords to input coords in [-1, 1], so a shift of `t` image
        # widths is 2*t in grid units; dividing by scale makes rotation/scale act around the centre.
        shift = (r[:, 2:] * 2 - 1) * (2 * self.translate_frac)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin, shift[:, 0]], dim=1),
                torch.stack([sin, cos, shift[:, 1]], dim=1),
            ],
            dim=1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
