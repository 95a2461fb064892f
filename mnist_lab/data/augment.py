"""Batched, per-sample random augmentation on whatever device the batch lives on.

Every stage draws its random numbers for the whole batch at once and applies them with one
tensor op: one ``affine_grid`` + ``grid_sample`` warps every image with its own rotation, scale,
shear, shift and elastic field; stroke width is a 3x3 max-pool; blur is one grouped convolution
with a per-image kernel. This replaces the per-sample PIL transforms of the usual tutorials,
which cost more than the model itself at MNIST scale (see docs/benchmarks.md), and it is faster
than kornia's equivalents here (``python -m mnist_lab.bench augment``, docs/robustness.md).

The stages follow what a camera or scanner does to a digit: shape (pen, hand), optics (blur),
light (contrast, brightness, uneven lighting), sensor (noise, specks), paper (stray lines),
occlusion (erasing).
All but the affine stage are off unless configured (conf/data/augment/robust.yaml).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from mnist_lab.errors import ConfigError


def _uniform(
    n: int, lo: float, hi: float, g: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _chosen(n: int, p: float, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Which images of the batch get a stage: a [N, 1, 1, 1] float mask, each with chance p."""
    return (torch.rand(n, generator=g, device=device) < p).float().view(n, 1, 1, 1)


def _smooth_field(
    n: int, channels: int, coarse: int, size: int, g: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Smooth random fields [N, channels, size, size], std ~1: coarse noise, upsampled."""
    noise = torch.randn(n, channels, coarse, coarse, generator=g, device=device)
    return F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)


def dilate(x: torch.Tensor) -> torch.Tensor:
    """3x3 maximum of every pixel, as two separable 3-tap maxima (~10x max_pool2d on CPU)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


OFF = 0.0  # the chance of a stage the config does not switch on
# The fields that are probabilities (validated together).
CHANCES = (
    "degrade_p",
    "stroke_p",
    "outline_p",
    "blur_p",
    "light_p",
    "noise_p",
    "lines_p",
    "lines_wavy",
    "erase_p",
    "erase_invert",
    "erase_border",
)


@dataclass(frozen=True)
class Augment:
    """Random augmentation of float images [N, 1, H, W] in [0, 1] with a black background,
    before normalisation. Each image draws its own parameters; a stage with chance ``*_p`` is
    applied to that fraction of the batch.

    Geometry (every image): rotation ± ``rotate_deg``, isotropic zoom within ``scale``, shift
    ± ``translate_frac`` of the size, horizontal shear ± ``shear_deg`` and an elastic
    displacement field (Simard et al. 2003), as a hand wobbles: random displacements of std
    ``elastic_px`` pixels on a 4x4 grid of control points, bilinearly upsampled, so neighbouring
    pixels move together (correlation 0.7 at 4 px, ~0 at 14 px) and the field's RMS over the
    image is ~0.76 ``elastic_px`` (tests/test_data.py measures it through this call).
    """

    rotate_deg: float = 10.0
    translate_frac: float = 0.1
    scale: Sequence[float] = (0.9, 1.1)
    shear_deg: float = 0.0
    elastic_px: float = 0.0
    # Share of the batch that gets the stages below at all: the rest stays clean (affine only),
    # so the net keeps learning clean digits as well as it would without them.
    degrade_p: float = 1.0
    # Twins: every image is trained twice in its step, clean (geometry only) and degraded (each
    # stage below with its own chance), so the batch doubles and the clean digits are all still
    # seen every epoch (batch augmentation, Hoffer et al. 2020; AugMix's clean/augmented pairs).
    # `degrade_p` is then unused. The batch comes back as [degraded twins; clean twins].
    twins: bool = False
    # The last `clean_last_epochs` epochs skip the stages below (geometry only): the annealed end
    # of the schedule is spent on clean digits, which is where clean accuracy is won.
    clean_last_epochs: int = 0
    # 0: every stage below hits an image with its own chance (several may pile up); k >= 1:
    # each degraded image gets exactly k distinct stages, drawn in proportion to the chances.
    stages_per_image: int = 0
    # Pen: thicker strokes, a fraction (up to `stroke`) of a 3x3 dilation, or thinner ones, up to
    # `stroke_thin` of a 3x3 erosion (None: as `stroke`). A full erosion wipes out MNIST's 2-px
    # strokes, so a small `stroke_thin` keeps the thin pen without erasing digits.
    stroke_p: float = OFF
    stroke: float = 1.0
    stroke_thin: float | None = None
    outline_p: float = OFF  # of the stroke-changed images: only the outline (bubble letters, edges)
    # Optics: Gaussian blur, anisotropic and rotated (defocus and motion), sigma per axis.
    blur_p: float = OFF
    blur_sigma: Sequence[float] = (0.3, 1.5)
    # Light: ink contrast down to `contrast`, a uniform brightness lift up to `brightness` and a
    # smooth uneven-light field up to `uneven` (fog, shadows, a grey page).
    light_p: float = OFF
    contrast: float = 0.3
    brightness: float = 0.5
    uneven: float = 0.5
    # Sensor: Gaussian noise (std up to `noise_std`) and salt-and-pepper specks (up to `specks`).
    noise_p: float = OFF
    noise_std: float = 0.25
    specks: float = 0.15
    # Stray lines: a ruled line, a strike-through or a pen slip across the digit, sometimes dashed.
    lines_p: float = OFF
    lines_wavy: float = 0.5  # chance a line is wavy (a zigzag scribble) rather than straight
    # Occlusion: one rectangle of `erase_area` of the image, flat grey, or inverted (chance
    # `erase_invert`: the digit runs off the page onto a dark desk or across a dark form box;
    # unlike a grey box it hides nothing, so it never turns a digit into another).
    erase_p: float = OFF
    erase_area: Sequence[float] = (0.02, 0.15)
    erase_invert: float = 0.5
    erase_border: float = OFF  # chance of bands along the image border instead of a rectangle

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not (0 < lo <= hi):
            raise ConfigError(
                "data.augment.scale must be [low, high] with 0 < low <= high, "
                f"got {list(self.scale)}"
            )
        if self.clean_last_epochs < 0:
            raise ConfigError(
                f"data.augment.clean_last_epochs must be >= 0, got {self.clean_last_epochs}"
            )
        if self.rotate_deg < 0 or not (0 <= self.translate_frac < 1):
            raise ConfigError(
                "data.augment.rotate_deg must be >= 0 and data.augment.translate_frac in [0, 1), "
                f"got rotate_deg={self.rotate_deg}, translate_frac={self.translate_frac}"
            )
        bad = {k: getattr(self, k) for k in CHANCES if not 0 <= getattr(self, k) <= 1}
        if bad:
            raise ConfigError(f"data.augment chances must be in [0, 1], got {bad}")
        if not (0 < self.contrast <= 1) or min(self.blur_sigma) <= 0:
            raise ConfigError(
                "data.augment.contrast must be in (0, 1] and blur_sigma [low, high] > 0, got "
                f"contrast={self.contrast}, blur_sigma={list(self.blur_sigma)}"
            )

    def for_epoch(self, epoch: int, max_epochs: int) -> Augment:
        """This augmentation as it runs in ``epoch`` (0-based) of ``max_epochs``: without the
        degradation stages in the last ``clean_last_epochs`` (a run without an epoch limit,
        ``max_epochs`` < 1, has no last epochs)."""
        last = max_epochs > 0 and epoch >= max_epochs - self.clean_last_epochs
        if self.clean_last_epochs and last:
            return replace(self, degrade_p=0.0, twins=False)
        return self

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.views(x, generator)[0]

    def views(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented batch and the same images after the geometry alone (before any
        degradation stage): what a teacher trained on clean digits can read."""
        g, n, dev = generator, x.shape[0], x.device
        # Random numbers are drawn in float32 on the batch's device: no host round-trip.
        r = torch.rand(n, 4, generator=g, device=dev, dtype=torch.float32)
        angle = (r[:, 0] * 2 - 1) * self.rotate_deg
        lo, hi = self.scale
        scale = lo + (hi - lo) * r[:, 1]
        shift = (r[:, 2:] * 2 - 1) * self.translate_frac
        shear = _uniform(n, -self.shear_deg, self.shear_deg, g, dev) if self.shear_deg else None
        elastic = None
        if self.elastic_px > 0:
            size = x.shape[-1]
            field = _smooth_field(n, 2, 4, size, g, dev)  # x and y displacement
            elastic = field.permute(0, 2, 3, 1) * (self.elastic_px * 2 / size)  # px -> grid units
        x = warp(x, angle, scale, shift, shear, elastic)
        # The batch is already in random order, so degrading its first `degrade_p` share is a
        # random choice, and the stages below compute only on those images. Twins are the
        # batch twice with its whole first copy degraded.
        k = n if self.twins else round(self.degrade_p * n)
        if self.twins:
            x = torch.cat([x, x])
        stages = [(p, f) for p, f in self._stages() if p > 0]
        if not stages or k == 0:
            return x, x
        geometry, degraded = x, x[:k]
        for (_, stage), pick in zip(stages, self._picks(k, stages, g, dev), strict=True):
            degraded = stage(degraded, g, pick)
        return torch.cat([degraded, x[k:]]), geometry

    def _picks(
        self, n: int, stages: list, g: torch.Generator | None, dev: torch.device
    ) -> list[torch.Tensor]:
        """Which images each stage hits, as [N, 1, 1, 1] float masks: each stage independently
        with its chance, or (``stages_per_image`` k > 0) exactly k distinct stages per image,
        drawn in proportion to their chances."""
        if not self.stages_per_image:
            return [_chosen(n, p, g, dev) for p, _ in stages]
        weights = torch.tensor([float(p) for p, _ in stages], device=dev).expand(n, -1)
        k = min(self.stages_per_image, len(stages))
        drawn = torch.multinomial(weights, k, replacement=False, generator=g)  # [N, k]
        return [(drawn == i).any(1).float().view(n, 1, 1, 1) for i in range(len(stages))]

    def _stages(self) -> list[tuple[float, Callable]]:
        """In capture order: pen, optics, light, sensor, paper, occlusion."""
        return [
            (self.stroke_p, self._stroke),
            (self.blur_p, self._blur),
            (self.light_p, self._light),
            (self.noise_p, self._noise),
            (self.lines_p, self._lines),
            (self.erase_p, self._erase),
        ]

    def _lines(
        self, x: torch.Tensor, g: torch.Generator | None, pick: torch.Tensor
    ) -> torch.Tensor:
        n, dev, (h, w) = x.shape[0], x.device, x.shape[-2:]
        cx, cy = _uniform(n, 0, w, g, dev), _uniform(n, 0, h, g, dev)  # a point on the line
        phi = _uniform(n, 0, math.pi, g, dev)
        width = _uniform(n, 0.5, 3.0, g, dev).view(n, 1, 1)
        level = _uniform(n, 0.4, 1.0, g, dev).view(n, 1, 1)
        period = _uniform(n, 3.0, 8.0, g, dev).view(n, 1, 1)
        dashed = torch.rand(n, generator=g, device=dev).view(n, 1, 1) < 0.5
        rows = torch.arange(h, device=dev, dtype=x.dtype).view(1, h, 1) - cy.view(n, 1, 1)
        cols = torch.arange(w, device=dev, dtype=x.dtype).view(1, 1, w) - cx.view(n, 1, 1)
        cos, sin = torch.cos(phi).view(n, 1, 1), torch.sin(phi).view(n, 1, 1)
        along = cols * cos + rows * sin
        # A wavy (zigzag) pen stroke: the line's centre swings ± `wave` px, period `period` px.
        wavy = torch.rand(n, 1, 1, generator=g, device=dev) < self.lines_wavy
        wave = _uniform(n, 0, 2.5, g, dev).view(n, 1, 1) * wavy
        swing = wave * (4 * (torch.remainder(along / period, 1.0) - 0.5).abs() - 1)
        across = (cols * sin - rows * cos - swing).abs()
        ink = (1 - (across - width / 2)).clamp(0, 1) * level  # anti-aliased edge, 1 px
        gaps = dashed & (torch.remainder(along, period / 2) > period / 4)
        ink = torch.where(gaps, torch.zeros_like(ink), ink).unsqueeze(1)
        return torch.maximum(x, ink * pick)

    def _stroke(
        self, x: torch.Tensor, g: torch.Generator | None, pick: torch.Tensor
    ) -> torch.Tensor:
        n = x.shape[0]
        most_thin = self.stroke if self.stroke_thin is None else self.stroke_thin
        amount = _uniform(n, -most_thin, self.stroke, g, x.device).view(n, 1, 1, 1)
        amount = amount * pick
        thick, thin = dilate(x), -dilate(-x)  # 3x3 dilation and erosion
        out = x + amount.abs() * torch.where(amount > 0, thick - x, thin - x)
        if self.outline_p > 0:  # outer morphological gradient: a 1-px ring around the stroke
            hollow = (_chosen(n, self.outline_p, g, x.device) * (amount != 0)).bool()
            out = torch.where(hollow, thick - x, out)
        return out

    def _blur(self, x: torch.Tensor, g: torch.Generator | None, pick: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        lo, hi = self.blur_sigma
        sx, sy = _uniform(n, lo, hi, g, dev), _uniform(n, lo, hi, g, dev)
        theta = _uniform(n, 0, math.pi, g, dev)
        k = 2 * math.ceil(2 * hi) + 1
        r = torch.arange(k, device=dev, dtype=x.dtype) - k // 2
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        cos, sin = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
        u, v = cos * xx + sin * yy, -sin * xx + cos * yy
        kernel = torch.exp(-0.5 * ((u / sx.view(n, 1, 1)) ** 2 + (v / sy.view(n, 1, 1)) ** 2))
        kernel = kernel / kernel.sum(dim=(1, 2), keepdim=True)
        # One grouped convolution: image i is convolved with kernel i.
        blurred = F.conv2d(x.transpose(0, 1), kernel.unsqueeze(1), padding=k // 2, groups=n)
        return torch.lerp(x, blurred.transpose(0, 1), pick)

    def _light(
        self, x: torch.Tensor, g: torch.Generator | None, pick: torch.Tensor
    ) -> torch.Tensor:
        n, dev, size = x.shape[0], x.device, x.shape[-1]
        contrast = _uniform(n, self.contrast, 1.0, g, dev).view(n, 1, 1, 1)
        lift = _uniform(n, 0, self.brightness, g, dev).view(n, 1, 1, 1)
        field = _smooth_field(n, 1, 3, size, g, dev)
        field = (field - field.amin(dim=(2, 3), keepdim=True)) / 4  # >= 0, ~[0, 1]
        uneven = _uniform(n, 0, self.uneven, g, dev).view(n, 1, 1, 1) * field
        lit = (x * contrast + lift + uneven).clamp(0, 1)
        return torch.lerp(x, lit, pick)

    def _noise(
        self, x: torch.Tensor, g: torch.Generator | None, pick: torch.Tensor
    ) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        std = _uniform(n, 0, self.noise_std, g, dev).view(n, 1, 1, 1)
        noisy = x + std * torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype)
        amount = _uniform(n, 0, self.specks, g, dev).view(n, 1, 1, 1)
        speck = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype)
        salt = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype) < 0.5
        noisy = torch.where(speck < amount, salt.to(x.dtype), noisy).clamp(0, 1)
        return torch.lerp(x, noisy, pick)

    def _erase(
        self, x: torch.Tensor, g: torch.Generator | None, pick: torch.Tensor
    ) -> torch.Tensor:
        n, dev, (h, w) = x.shape[0], x.device, x.shape[-2:]
        lo, hi = self.erase_area
        area = _uniform(n, lo, hi, g, dev) * h * w
        aspect = torch.exp(_uniform(n, -1.0, 1.0, g, dev))  # e^±1: bars to squares
        eh, ew = (area * aspect).sqrt().clamp(1, h), (area / aspect).sqrt().clamp(1, w)
        top = torch.rand(n, generator=g, device=dev) * (h - eh)
        left = torch.rand(n, generator=g, device=dev) * (w - ew)
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = (
            (rows >= top.view(n, 1, 1))
            & (rows < (top + eh).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1))
            & (cols < (left + ew).view(n, 1, 1))
        ).unsqueeze(1)
        # Or bands along the border: the desk beyond the page's edge, the frame of a form's box.
        # Each side gets a band 2-8 px wide with chance 0.4 (at least one side per image).
        sides = torch.rand(n, 4, generator=g, device=dev) < 0.4
        sides[~sides.any(1), 0] = True
        widths = _uniform(4 * n, 2.0, 8.0, g, dev).view(n, 4) * sides
        band = (
            (cols < widths[:, 0].view(n, 1, 1))
            | (cols >= w - widths[:, 1].view(n, 1, 1))
            | (rows < widths[:, 2].view(n, 1, 1))
            | (rows >= h - widths[:, 3].view(n, 1, 1))
        ).unsqueeze(1)
        at_border = torch.rand(n, 1, 1, 1, generator=g, device=dev) < self.erase_border
        box = torch.where(at_border, band, box) & (pick > 0)
        grey = torch.rand(n, 1, 1, 1, generator=g, device=dev, dtype=x.dtype).expand_as(x)
        invert = torch.rand(n, 1, 1, 1, generator=g, device=dev) < self.erase_invert
        return torch.where(box, torch.where(invert, 1 - x, grey), x)


def warp(
    x: torch.Tensor,
    angle_deg: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    shear_deg: torch.Tensor | None = None,
    elastic: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate by ``angle_deg``, zoom by ``scale``, shear by ``shear_deg`` (horizontal) and move
    by ``shift`` (fractions of the image size, [N, 2] as x, y) each image of ``x`` [N, C, H, W]
    about its centre, plus an optional displacement field [N, H, W, 2] in grid units: one
    batched ``grid_sample``."""
    angle = torch.deg2rad(angle_deg)
    # affine_grid maps output coords to input coords in [-1, 1]: the inverse transform, so the
    # rotation/zoom are divided by `scale`, and a shift of `t` image widths is -2*t grid units.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    tx, ty = -2 * shift[:, 0], -2 * shift[:, 1]
    a, b = cos, -sin
    if shear_deg is not None:  # x_in += tan(shear) * y_in: slanted writing
        t = torch.tan(torch.deg2rad(shear_deg))
        a, b = cos + t * sin, -sin + t * cos
    theta = torch.stack(
        [torch.stack([a, b, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic is not None:
        grid = grid + elastic.to(grid.dtype)
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
