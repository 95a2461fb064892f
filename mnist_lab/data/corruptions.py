"""The corruption suite: 15 corruptions of MNIST digits modelled on MNIST-C (Mu & Gilmer 2019).

MNIST-C's files cannot be downloaded on offline machines, so the corruptions are implemented
here, each at one fixed severity taken from MNIST-C's choice for it (docs/robustness.md lists
them). They are seeded: the same seed gives the same corrupted images, on any machine. Every
corruption maps uint8 digits [N, 28, 28] (white on black) to uint8 digits of the same shape and
runs batched (torch or vectorised numpy), ~1-2 s for the 10,000 test images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from mnist_lab.data.augment import dilate, warp
from mnist_lab.errors import ConfigError

Corruption = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255).unsqueeze(1)  # [N, 1, 28, 28] in [0, 1]


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return x.squeeze(1).clamp(0, 1).mul(255).round().to(torch.uint8)


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def _signs(n: int, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.choice([-1.0, 1.0], size=n)).float()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, 1, H, W], edges replicated (as scikit-image's 'nearest')."""
    radius = math.ceil(4 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def _affine(
    x: torch.Tensor,
    angle: torch.Tensor | float = 0.0,
    *,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    shear_deg: torch.Tensor | None = None,
) -> torch.Tensor:
    n = x.shape[0]
    return warp(
        x,
        torch.as_tensor(angle).expand(n).float(),
        scale=torch.ones(n) if scale is None else scale,
        shift=torch.zeros(n, 2) if shift is None else shift,
        shear_deg=shear_deg,
    )


# --------------------------------------------------------------------------- noise
def shot_noise(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Photon noise: each pixel's brightness is a Poisson count of 3 photons at full white."""
    return _uint8(torch.poisson(_float(x) * 3, generator=_gen(rng)) / 3)


def impulse_noise(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Salt and pepper: 17 % of the pixels set to black or white (half each)."""
    out = x.clone()
    hit = rng.random(x.shape) < 0.17
    salt = rng.random(x.shape) < 0.5
    out[torch.from_numpy(hit & salt)] = 255
    out[torch.from_numpy(hit & ~salt)] = 0
    return out


# --------------------------------------------------------------------------- blur
def glass_blur(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Frosted glass: blur (sigma 0.7), swap each pixel with a neighbour up/left (one step, half
    of the pixels, two passes), blur again."""
    y = (_gaussian_blur(_float(x), 0.7) * 255).to(torch.uint8).squeeze(1).numpy().copy()
    n, idx = len(y), np.arange(len(y))
    for _ in range(2):
        for h in range(26, 1, -1):
            for w in range(26, 1, -1):
                swap = rng.random(n) < 0.5
                dy, dx = rng.integers(-1, 1, size=(2, n))  # -1 or 0
                i, h2, w2 = idx[swap], h + dy[swap], w + dx[swap]
                a, b = y[i, h, w].copy(), y[i, h2, w2].copy()
                y[i, h, w], y[i, h2, w2] = b, a
    return _uint8(_gaussian_blur(_float(torch.from_numpy(y)), 0.7))


def motion_blur(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Camera shake: a one-sided streak (radius 10 px, Gaussian fall-off sigma 3) at an angle
    within ±45°, one grouped convolution with a per-image kernel."""
    n, radius = len(x), 10
    size, centre = 2 * radius + 3, radius + 1  # one spare pixel each side for the splat
    angle = np.deg2rad(rng.uniform(-45, 45, size=n))[:, None]
    d = np.arange(radius + 1)[None]
    weight = np.exp(-(d**2) / (2 * 3.0**2)) * np.ones((n, 1))
    cols, rows = centre + d * np.cos(angle), centre - d * np.sin(angle)  # the taps, [n, 11]
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    fc, fr = cols - c0, rows - r0
    kernels = np.zeros((n, size, size))
    image = np.broadcast_to(np.arange(n)[:, None], c0.shape)
    for dr, dc, share in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                          (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):  # fmt: skip
        np.add.at(kernels, (image, r0 + dr, c0 + dc), weight * share)  # bilinear splat
    kernels /= kernels.sum(axis=(1, 2), keepdims=True)
    k = torch.from_numpy(kernels).float().unsqueeze(1)
    out = F.conv2d(_float(x).transpose(0, 1), k, padding=centre, groups=n)
    return _uint8(out.transpose(0, 1))


# --------------------------------------------------------------------------- geometry
def shear(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Horizontal shear by ±0.4 rad (23°) about the centre."""
    deg = _signs(len(x), rng) * math.degrees(0.4)
    return _uint8(_affine(_float(x), shear_deg=deg))


def scale(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Shrunk to 70 % about the centre."""
    return _uint8(_affine(_float(x), scale=torch.full((len(x),), 0.7)))


def rotate(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Rotated by ±0.4 rad (23°) about the centre."""
    return _uint8(_affine(_float(x), _signs(len(x), rng) * math.degrees(0.4)))


def translate(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Moved by 3 px along each axis (random signs)."""
    n = len(x)
    shift = torch.stack([_signs(n, rng), _signs(n, rng)], dim=1) * 3 / 28
    return _uint8(_affine(_float(x), shift=shift))


# --------------------------------------------------------------------------- light / weather
def brightness(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Brightness +0.5 (HSV value of a grey image): the black background becomes mid-grey."""
    return _uint8(_float(x) + 0.5)


def stripe(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The 7 leftmost and 7 rightmost columns inverted."""
    out = x.clone()
    out[..., :7] = 255 - out[..., :7]
    out[..., 21:] = 255 - out[..., 21:]
    return out


def _plasma(n: int, rng: np.random.Generator, size: int = 256, decay: float = 1.4) -> np.ndarray:
    """Diamond-square fractal heightmaps [n, size, size] in [0, 1] (wrapping), amplitude
    divided by ``decay`` at each finer scale: the clouds of ImageNet-C/MNIST-C's fog."""
    m = np.zeros((n, size, size), dtype=np.float32)
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        m[:, half::step, half::step] = square / 4 + rng.uniform(
            -wibble, wibble, square.shape
        ).astype(np.float32)
        centres, corners = m[:, half::step, half::step], m[:, ::step, ::step]
        a = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        m[:, ::step, half::step] = a / 4 + rng.uniform(-wibble, wibble, a.shape).astype(np.float32)
        b = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        m[:, half::step, ::step] = b / 4 + rng.uniform(-wibble, wibble, b.shape).astype(np.float32)
        step, wibble = half, wibble / decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Fog: 3x a fractal cloud (decay 1.4) added, then rescaled so the digit keeps its peak
    brightness relative to the cloud: the digit's contrast drops to about a quarter."""
    out = _float(x).squeeze(1).numpy()
    clouds = np.concatenate(
        [_plasma(min(512, len(x) - s), rng)[:, :28, :28] for s in range(0, len(x), 512)]
    )
    peak = out.max(axis=(1, 2), keepdims=True)
    out = (out + 3.0 * clouds) * peak / (peak + 3.0)
    return _uint8(torch.from_numpy(out).unsqueeze(1))


def spatter(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Mud spatter: thresholded blurred noise (sigma 1, level 0.65), softened (sigma 1.5) into
    blobs of dark-grey mud (63/255) that cover the digit."""
    liquid = torch.from_numpy(rng.normal(0.65, 0.3, size=(len(x), 1, 28, 28)).astype(np.float32))
    liquid = _gaussian_blur(liquid, 1.0)
    mud = _gaussian_blur((liquid > 0.65).float(), 1.5)
    mud = torch.where(mud < 0.8, torch.zeros_like(mud), mud)
    return _uint8(_float(x) * (1 - mud) + 63 / 255 * mud)


# --------------------------------------------------------------------------- lines and edges
def _line_profile(distance: np.ndarray) -> np.ndarray:
    """Brightness of a scanned pen line at a distance (px) from its centre: 1 at the centre,
    0 beyond ~1.4 px (log fall-off, as MNIST-C's lines)."""
    d = np.clip(distance.astype(np.float64), 0, 2.3 * (1 - 1e-6))
    return np.clip(np.log(1 - d / 2.3) + 1, 0, 1).astype(np.float32)


def _segment_distance(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance of every pixel centre of a 28x28 grid to the segments p0[i] -> p1[i] ([n, 2]
    as (col, row)): [n, 28, 28]."""
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    px = np.stack([cols, rows], axis=-1)[None]  # [1, 28, 28, 2]
    a, ab = p0[:, None, None, :], (p1 - p0)[:, None, None, :]
    t = np.clip(((px - a) * ab).sum(-1) / np.maximum((ab**2).sum(-1), 1e-9), 0, 1)
    return np.linalg.norm(px - (a + t[..., None] * ab), axis=-1)


def dotted_line(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A dotted pen line across the image (left to right, random end rows), 2 px on, 2 px off."""
    n = len(x)
    r0, r1 = rng.integers(0, 27, size=(2, n))
    p0 = np.stack([np.zeros(n), r0], axis=1).astype(np.float32)
    p1 = np.stack([np.full(n, 27.0), r1], axis=1).astype(np.float32)
    line = _line_profile(_segment_distance(p0, p1))
    line[:, :, (np.arange(28) // 2) % 2 == 0] = 0  # columns 0-1, 4-5, ... off
    return _uint8(_float(x) + torch.from_numpy(line).float().unsqueeze(1))


def zigzag(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A zigzag pen line from column 2 to 25 at a random height and slope (teeth 4 px apart,
    ±2 px high)."""
    n = len(x)
    r0 = rng.integers(0, 27, size=n).astype(np.float32)
    theta = np.arctan(rng.integers(-5, 5, size=n) / 23.0)
    length = 23.0 / np.cos(theta)
    # Vertices along the line: 0, 2, 6, 10, ... px; across it: 0, +2, -2, +2, ... px.
    k = np.arange(int(length.max() // 4) + 3)
    along = np.minimum(np.where(k == 0, 0.0, 4.0 * k - 2.0)[None], length[:, None])  # [n, K]
    across = np.where(k == 0, 0.0, 2.0 * (-1.0) ** (k + 1))[None]
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    pts = np.stack([2 + along * cos - across * sin, r0[:, None] + along * sin + across * cos], -1)
    line = np.zeros((n, 28, 28), dtype=np.float32)
    for j in range(len(k) - 1):
        seg = _line_profile(_segment_distance(pts[:, j].astype(np.float32), pts[:, j + 1]))
        line = np.maximum(line, seg)
    return _uint8(_float(x) + torch.from_numpy(line).float().unsqueeze(1))


def canny_edges(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Only the outline: Canny edges (Gaussian sigma 1, hysteresis 0.1 / 0.2 of full scale)."""
    smooth = (_gaussian_blur(_float(x), 1.0).squeeze(1) * 255).round().to(torch.uint8).numpy()
    edges = [cv2.Canny(img, 25.5, 51.0, L2gradient=True) for img in smooth]
    return torch.from_numpy(np.stack(edges))


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "brightness": brightness,
    "translate": translate,
    "stripe": stripe,
    "fog": fog,
    "spatter": spatter,
    "dotted_line": dotted_line,
    "zigzag": zigzag,
    "canny_edges": canny_edges,
}


# --------------------------------------------------------------------------- other sources
# What other writers and other scanning pipelines than NIST's do to a digit: an MNIST model
# meets them on USPS-like forms, old scans and phone apps (docs/robustness.md, "Cross-source").
def lowres(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A low-resolution scan: area-downsampled to 8-16 px (per image) and bilinearly blown up
    again to 28 px, as a 16x16 USPS digit or a fax is when an MNIST model reads it."""
    x, out = _float(x), torch.empty(len(x), 1, 28, 28)
    sides = rng.integers(8, 17, size=len(x))
    for side in np.unique(sides):
        at = torch.from_numpy(np.flatnonzero(sides == side))
        small = F.interpolate(x[at], size=(int(side),) * 2, mode="area")
        out[at] = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    return _uint8(out)


def _refit(x: torch.Tensor, side: int, stretch: float, interpolation: int) -> np.ndarray:
    """Each digit's ink box (pixels > 30) resized into a ``side`` x ``side`` frame and centred
    by its box: the longer axis fills the frame; the shorter one is stretched towards filling
    it too, at most ``stretch`` times the aspect-kept fit (1: aspect kept). Float32 [N, side,
    side] on the 0-255 scale."""
    out = np.zeros((len(x), side, side), np.float32)
    for i, img in enumerate(x.numpy()):
        ys, xs = np.nonzero(img > 30)
        if len(ys) == 0:
            continue
        top, left = ys.min(), xs.min()
        h, w = ys.max() - top + 1, xs.max() - left + 1
        fit = side / max(h, w)
        nh = max(1, round(h * min(side / h, stretch * fit)))
        nw = max(1, round(w * min(side / w, stretch * fit)))
        crop = img[top : top + h, left : left + w].astype(np.float32)
        r, c = (side - nh) // 2, (side - nw) // 2
        out[i, r : r + nh, c : c + nw] = cv2.resize(crop, (nw, nh), interpolation=interpolation)
    return out


def box_fill(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Box-filling normalisation: the ink's bounding box stretched to fill the 20x20 box on each
    axis (aspect ratio not kept, at most 2x against MNIST's aspect-keeping fit) and centred by
    its box, not by its centre of mass."""
    filled = np.zeros((len(x), 28, 28), np.float32)
    filled[:, 4:24, 4:24] = _refit(x, 20, 2.0, cv2.INTER_LINEAR)
    return torch.from_numpy(filled.clip(0, 255).round().astype(np.uint8))


def usps_frame(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A USPS digit as domain-adaptation benchmarks feed it to an MNIST model: the ink fitted to
    a 16x16 frame with no margin (aspect kept), then blown up to 28x28, so the digit fills the
    whole image where MNIST leaves a 4-px border (and is 40 % larger)."""
    frames = torch.from_numpy(_refit(x, 16, 1.0, cv2.INTER_AREA)).unsqueeze(1) / 255
    return _uint8(F.interpolate(frames, size=(28, 28), mode="bilinear"))


def thick_pen(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A felt-tip or marker: strokes ~3 px wider (a 3x3 dilation and half of another), beyond
    MNIST's widest and the robust augmentation's one dilation."""
    once = dilate(_float(x))
    return _uint8(once + 0.5 * (dilate(once) - once))


def thin_pen(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A fine pen: strokes ~1 px thinner, eroded at twice the resolution (a 3x3 erosion at 56 px
    takes half a pixel off each side at 28 px), contrast restored to full white."""
    big = F.interpolate(_float(x), scale_factor=2, mode="bilinear", align_corners=False)
    thin = F.avg_pool2d(-dilate(-big), 2)
    top = thin.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return _uint8(thin / top)


def slant(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Another writer population's habits: slant (shear) uniform in ±0.35 rad (20°) plus a tilt
    uniform in ±12°, both at once, where the suite's shear and rotate take one at a time."""
    n = len(x)
    shear_deg = torch.from_numpy(rng.uniform(-1, 1, n)).float() * math.degrees(0.35)
    angle = torch.from_numpy(rng.uniform(-12, 12, n)).float()
    return _uint8(_affine(_float(x), angle, shear_deg=shear_deg))


def binarize(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A 1-bit scanner or a thresholding app: ink or paper, no anti-aliased grey edge (NIST's
    forms were scanned binary; MNIST's grey levels come from its resampling)."""
    return (x >= 128).to(torch.uint8) * 255


CROSS_SOURCE: dict[str, Corruption] = {
    "lowres": lowres,
    "box_fill": box_fill,
    "usps_frame": usps_frame,
    "thick_pen": thick_pen,
    "thin_pen": thin_pen,
    "slant": slant,
    "binarize": binarize,
}
CONDITIONS = CORRUPTIONS | CROSS_SOURCE  # every name `corrupt` knows, both suites


SUITE_SEED = 0  # the seed of the reported numbers (robustness and eval robustness=true)


def corrupt(name: str, images: torch.Tensor, seed: int = SUITE_SEED) -> torch.Tensor:
    """``images`` (uint8 [N, 28, 28]) under corruption ``name``, seeded by (seed, name) so that
    each corruption's randomness does not depend on which others ran before it."""
    if name not in CONDITIONS:
        raise ConfigError(
            f"unknown corruption {name!r}: choose from {', '.join(CONDITIONS)} "
            "(config key `corruptions` in conf/robustness.yaml)"
        )
    rng = np.random.default_rng([seed, *name.encode()])
    return CONDITIONS[name](images.cpu(), rng)
