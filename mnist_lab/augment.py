"""Batched, per-sample random affine augmentation on whatever device the batch lives on.

One ``affine_grid`` + ``grid_sample`` call warps the whole batch, each image with its own
random rotation, scale and translation. This replaces the per-sample PIL transforms of the
usual tutorials, which cost more than the model itself at MNIST scale (see docs/).
"""

from __future__ import annotations

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
        angle = (r[:, 0] * 2 - 1) * self.rotate_deg
        lo, hi = self.scale
        scale = lo + (hi - lo) * r[:, 1]
        shift = (r[:, 2:] * 2 - 1) * self.translate_frac
        return warp(x, angle, scale, shift)


def warp(
    x: torch.Tensor, angle_deg: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Rotate by ``angle_deg``, zoom by ``scale`` and move by ``shift`` (fractions of the image
    size, [N, 2] as x, y) each image of ``x`` [N, C, H, W] about its centre, in one batched call."""
    angle = torch.deg2rad(angle_deg)
    # affine_grid maps output coords to input coords in [-1, 1]: the inverse transform, so the
    # rotation/zoom are divided by `scale`, and a shift of `t` image widths is -2*t grid units.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    tx, ty = -2 * shift[:, 0], -2 * shift[:, 1]
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def tta_views(x: torch.Tensor, shift_px: float = 1.0) -> list[torch.Tensor]:
    """Test-time augmentation: the image and four copies moved by ``shift_px`` pixels
    (up/down/left/right). Small shifts are label-preserving for digits; flips are not."""
    n, s = x.shape[0], shift_px / x.shape[-1]
    ones, zeros = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    views = [x]
    for dx, dy in ((s, 0.0), (-s, 0.0), (0.0, s), (0.0, -s)):
        shift = torch.tensor([dx, dy], device=x.device).expand(n, 2)
        views.append(warp(x, zeros, ones, shift))
    return views
