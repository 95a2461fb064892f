"""Phone photos of handwritten digits, rendered from MNIST: a seeded, labelled photo set.

A photographed digit differs from an MNIST image in everything the preprocessing
(``mnist_lab.serving.preprocess.to_mnist``) has to undo, and a test set drawn with one recipe would
only prove the preprocessing fits that recipe. So each photo draws every factor a phone camera
varies, independently: canvas size and aspect, paper (white, cream, grey, recycled; blotches,
grain, specks) or a chalkboard (~15 %), light (exposure, tint, linear gradient, vignetting),
cast shadows (soft or hard edged, often across the digit), the pen (black, blue, red or green
ink, pencil, marker, chalk; stroke width from hairline to marker; pressure along the stroke),
the digit's size, position, rotation, slant and perspective, defocus and motion blur, sensor
noise (luminance and chroma), the camera's tone curve and JPEG quality.

    python -m mnist_lab.photos out=DIR n=1000 seed=0   # JPEGs + labels.csv, from the test set
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import cv2
import numpy as np

SHAPE_RES = 168  # the stroke shape is drawn at 6x MNIST's resolution, then warped into place
CHALK_SHARE = 0.15  # light-on-dark photos (chalk on a board)
SHADOWS = (0.6, 0.35, 0.05)  # chance of 0, 1 and 2 cast shadows
HARD_SHADOWS = 0.35  # share of shadows with a sharp edge (direct sun, a small lamp)
# Reflectance (RGB, 0-1) of the inks; jittered per photo.
INKS = {
    "black": (0.07, 0.07, 0.09),
    "blue": (0.12, 0.18, 0.52),
    "red": (0.74, 0.13, 0.15),
    "green": (0.12, 0.44, 0.22),
}
# Pens: stroke width in MNIST pixels (of the 20-px digit box; MNIST's median is ~2.5) and the
# least opacity the pressure reaches along a stroke. Pencil and ballpoint re-draw the digit
# along its centre line; felt pen, marker and chalk keep MNIST's strokes, dilated if wider.
PENS = {
    "pencil": ((0.6, 1.6), (0.55, 0.9)),
    "ballpoint": ((0.8, 2.0), (0.7, 0.95)),
    "felt": ((1.6, 3.2), (0.85, 1.0)),
    "marker": ((3.0, 5.0), (0.9, 1.0)),
}
PAPERS = {
    "white": (0.93, 0.93, 0.93),
    "cream": (0.95, 0.91, 0.80),
    "grey": (0.78, 0.78, 0.77),
    "recycled": (0.86, 0.83, 0.76),
}
BOARDS = {"green": (0.11, 0.22, 0.16), "black": (0.08, 0.085, 0.09), "slate": (0.13, 0.15, 0.18)}


def _smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random grid of ``cells`` per side, cubic-resized."""
    h, w = shape
    grid = rng.uniform(-1, 1, (max(2, cells), max(2, round(cells * w / h)))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _centreline(mask: np.ndarray) -> np.ndarray:
    """The strokes' centreline, one pixel wide (Zhang-Suen thinning, vectorised)."""
    img = np.pad(mask.astype(bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            n = [
                img[:-2, 1:-1],
                img[:-2, 2:],
                img[1:-1, 2:],
                img[2:, 2:],
                img[2:, 1:-1],
                img[2:, :-2],
                img[1:-1, :-2],
                img[:-2, :-2],
            ]  # p2..p9
            count = sum(x.astype(np.uint8) for x in n)
            turns = sum((~n[k] & n[(k + 1) % 8]).astype(np.uint8) for k in range(8))
            p2, _, p4, _, p6, _, p8, _ = n
            keep = p2 & p4 & p6 | p4 & p6 & p8 if step == 0 else p2 & p4 & p8 | p2 & p6 & p8
            remove = img[1:-1, 1:-1] & (count >= 2) & (count <= 6) & (turns == 1) & ~keep
            if remove.any():
                img[1:-1, 1:-1] &= ~remove
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


def _stroke_shape(
    digit: np.ndarray, width: float, redraw: bool, rng: np.random.Generator
) -> np.ndarray:
    """Ink coverage [SHAPE_RES, SHAPE_RES] in 0-1 of a pen ``width`` MNIST pixels wide.

    ``redraw``: a thin pen (pencil, ballpoint) re-draws the digit along its centre line;
    otherwise MNIST's own strokes are thresholded and, for a wider pen, dilated."""
    v = cv2.resize(digit.astype(np.float32) / 255, (SHAPE_RES,) * 2, interpolation=cv2.INTER_CUBIC)
    px = SHAPE_RES / 28  # pixels per MNIST pixel
    mask = (v > 0.5).astype(np.uint8)
    skeleton = _centreline(mask)
    if not skeleton.any():
        skeleton = mask > 0
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    own = 2 * float(np.median(inside[skeleton]))  # the digit's own stroke width, in pixels
    if not redraw:
        shape = np.clip((v - rng.uniform(0.3, 0.6)) * px + 0.5, 0, 1)
        grow = round((width * px - own) / 2)
        if grow > 0:
            disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)
            shape = cv2.dilate(shape, disk)
        return shape
    distance = cv2.distanceTransform((~skeleton).astype(np.uint8), cv2.DIST_L2, 5)
    half = width * px / 2 * (1 + 0.2 * _smooth_noise(v.shape, 4, rng))  # width varies a little
    trace = np.clip(half + 0.5 - distance, 0, 1)
    # Keep what thinning would change: filled loops (an 8 whose loop is a blob stays an 8),
    # and faint strokes stay faint (the pen presses as hard as the original stroke is bright).
    radius = max(1, round(0.9 * own))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    grown: np.ndarray = cv2.dilate((inside > 0.9 * own).astype(np.uint8), disk)  # uint8 in, out
    blobs = grown & mask
    brightness = cv2.dilate(v, disk)
    return np.maximum(trace * np.clip((brightness - 0.45) / 0.4, 0, 1), blobs.astype(np.float32))


def _blur_kernel(rng: np.random.Generator, scale: float) -> np.ndarray | None:
    """Motion blur (a short line at a random angle) for ~25 % of photos, else None."""
    if rng.random() > 0.25:
        return None
    length = max(2, round(rng.uniform(2, 10) * scale))
    kernel = np.zeros((length + 2, length + 2), np.float32)
    c = (length + 1) / 2
    angle = rng.uniform(0, np.pi)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    cv2.line(
        kernel,
        (round((c - dx) * 16), round((c - dy) * 16)),
        (round((c + dx) * 16), round((c + dy) * 16)),
        1.0,
        1,
        cv2.LINE_AA,
        shift=4,
    )
    return kernel / kernel.sum()


def _blur(image: np.ndarray, sigma: float, kernel: np.ndarray | None) -> np.ndarray:
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if kernel is not None:
        image = cv2.filter2D(image, -1, kernel)
    return image


def _shadow(
    shape: tuple[int, int],
    target: tuple[float, float, float],
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A cast shadow's coverage (0-1), a half-plane or a corner; its edge often crosses the digit
    (``target``: centre x, y and size); ``sigma``: edge softness in pixels."""
    h, w = shape
    cx, cy, size = target
    if rng.random() < 0.65:
        p = np.array([cx, cy]) + rng.uniform(-0.6, 0.6, 2) * size
    else:
        p = rng.uniform(0, 1, 2) * (w, h)
    phi = rng.uniform(0, 2 * np.pi)
    big = 4.0 * (h + w)
    if rng.random() < 0.6:  # a straight edge
        d, n = np.array([np.cos(phi), np.sin(phi)]), np.array([-np.sin(phi), np.cos(phi)])
        points = [p - big * d, p + big * d, p + big * d + big * n, p - big * d + big * n]
    else:  # a corner of a phone or a hand
        phi2 = phi + rng.uniform(0.35, 0.8) * np.pi
        points = [p, p + big * np.array([np.cos(phi), np.sin(phi)])]
        points.append(p + big * np.array([np.cos(phi2), np.sin(phi2)]))
    # Soft edges are drawn small and blurred there, then resized: the same edge, far cheaper.
    factor = 1 if sigma < 3 else min(8, int(sigma / 1.5))
    small: np.ndarray = np.zeros((h // factor + 1, w // factor + 1), np.float32)
    pts = np.round(np.array(points) / factor * 16).astype(np.int32)
    cv2.fillPoly(small, [pts], 1.0, cv2.LINE_AA, shift=4)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma / factor))
    if factor == 1:
        return small[:h, :w]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _digit_quad(field: float, rng: np.random.Generator) -> np.ndarray:
    """Where the digit's 28x28 field's corners land, around (0, 0): the camera's rotation and
    perspective (the handwriting's own slant and width vary in MNIST already)."""
    corners = (np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32) - 0.5) * field
    angle = np.deg2rad(rng.uniform(-10, 10))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    corners = corners @ rot.T
    return corners + rng.normal(0, 0.03 * field, corners.shape).astype(np.float32)


@dataclass
class _Style:
    """What the digit is written with and on: reflectances are RGB in 0-1."""

    surface_kind: str  # a paper from PAPERS, or "board"
    pen: str  # a pen from PENS, or "chalk"
    surface: np.ndarray
    ink: np.ndarray
    width: float  # stroke width, MNIST pixels
    min_opacity: float

    @property
    def chalk(self) -> bool:
        return self.pen == "chalk"


def _style(rng: np.random.Generator) -> _Style:
    """Paper and pen, or board and chalk (CHALK_SHARE of the photos)."""
    if rng.random() < CHALK_SHARE:
        surface = np.array(BOARDS[str(rng.choice(list(BOARDS)))]) * rng.uniform(0.7, 1.4)
        ink = np.array((0.92, 0.92, 0.88)) if rng.random() < 0.8 else np.array((0.92, 0.86, 0.5))
        ink = ink * rng.uniform(0.8, 1.0)
        return _Style("board", "chalk", surface, ink, rng.uniform(1.5, 4.0), rng.uniform(0.6, 0.95))
    paper = str(rng.choice(list(PAPERS)))
    surface = np.array(PAPERS[paper]) * rng.uniform(0.93, 1.05)
    pen = str(rng.choice(list(PENS), p=[0.3, 0.3, 0.25, 0.15]))
    (w_lo, w_hi), (o_lo, o_hi) = PENS[pen]
    if pen == "pencil":
        ink = np.full(3, rng.uniform(0.25, 0.5))
    else:
        ink = np.array(INKS[str(rng.choice(list(INKS), p=[0.45, 0.25, 0.15, 0.15]))])
        ink = np.clip(ink + rng.uniform(-0.05, 0.05, 3), 0.02, 1)
    return _Style(paper, pen, surface, ink, rng.uniform(w_lo, w_hi), rng.uniform(o_lo, o_hi))


def render_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """One MNIST digit (uint8 [28, 28], white on black) as a JPEG phone photo of handwriting.

    Smooth fields (light, shadows, blotches, grain, chroma noise) are built at half resolution
    or less and resized once; only the ink, specks and sensor noise are drawn at full size."""
    digit = np.asarray(digit)
    if digit.shape != (28, 28):
        raise ValueError(f"digit must be a 28x28 MNIST image, got shape {digit.shape}")
    long_side = int(rng.uniform(600, 2000))
    short_side = max(600, int(long_side / rng.uniform(1.0, 1.6)))
    h, w = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    scale = min(h, w) / 1000  # blur, shadow edges and specks scale with the resolution
    style = _style(rng)
    chalk, pen = style.chalk, style.pen
    tint = 1 + rng.normal(0, 0.04, 3)  # the light's colour
    surface, ink = np.clip(style.surface * tint, 0.01, 1), np.clip(style.ink * tint, 0, 1)

    # --- the digit: stroke shape, pen pressure and grain, placement, blur
    shape = _stroke_shape(digit, style.width, pen in ("pencil", "ballpoint"), rng)
    content = rng.uniform(0.10, 0.60) * min(h, w)  # MNIST's 20-px box, in canvas pixels
    quad = _digit_quad(content * 28 / 20, rng)
    fit = min(1.0, *(0.98 * np.array([w, h]) / (quad.max(0) - quad.min(0))))
    quad, content = quad * fit, content * fit  # a big, tilted digit still fits the canvas
    lo, hi = quad.min(0), quad.max(0)
    centre = np.array([rng.uniform(-lo[0], w - hi[0]), rng.uniform(-lo[1], h - hi[1])])
    sigma = rng.uniform(0.0, 1.8) * scale + rng.uniform(0, 0.6)  # defocus
    motion = _blur_kernel(rng, scale)
    pad = int(3 * sigma + (len(motion) if motion is not None else 0) + 2)
    x0, y0 = (np.floor(centre + lo).astype(int) - pad).clip(0)
    x1, y1 = np.minimum(np.ceil(centre + hi).astype(int) + pad, (w, h))
    src = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32) * SHAPE_RES
    dst = (quad + centre - np.array([x0, y0])).astype(np.float32)
    alpha: np.ndarray = cv2.warpPerspective(
        shape, cv2.getPerspectiveTransform(src, dst), (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR
    )
    field = content * 28 / 20
    if field > SHAPE_RES * 1.5:  # re-sharpen the edges the upscale blurred
        alpha = np.clip((alpha - 0.5) * (field / SHAPE_RES / 1.5) + 0.5, 0, 1)
    alpha *= 1 - (1 - style.min_opacity) * (0.5 + 0.5 * _smooth_noise(alpha.shape, 5, rng))
    if pen in ("chalk", "pencil"):  # the board's grain, the paper's tooth
        grain = rng.random(alpha.shape, dtype=np.float32)
        alpha *= np.clip(grain * (1.2 if chalk else 0.8) + 0.45, 0, 1)
    alpha = _blur(alpha, sigma, motion)

    # --- light and surface at half resolution: gradient, vignetting, shadows, blotches, grain
    hh, hw = (h + 1) // 2, (w + 1) // 2
    sh, sw = max(8, h // 32), max(8, w // 32)
    yy, xx = np.mgrid[0 : 1 : sh * 1j, 0 : 1 : sw * 1j].astype(np.float32)
    xx *= w / max(h, w)
    yy *= h / max(h, w)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = (xx - xx.mean()) * np.cos(phi) + (yy - yy.mean()) * np.sin(phi)
    light = 1 + rng.uniform(0, 0.6) * ramp  # up to ~1.9x brighter on one side
    vx, vy = xx.max() * rng.uniform(0.2, 0.8), yy.max() * rng.uniform(0.2, 0.8)
    light *= 1 - rng.uniform(0, 0.2) * ((xx - vx) ** 2 + (yy - vy) ** 2) / 0.5  # vignetting
    light *= 1 + rng.uniform(0, 0.05) * _smooth_noise((sh, sw), int(rng.integers(3, 12)), rng)
    light = cv2.resize(np.clip(light, 0.15, 1.3), (hw, hh), interpolation=cv2.INTER_LINEAR)
    target = (centre[0] / 2, centre[1] / 2, content / 2)
    for _ in range(int(rng.choice(3, p=SHADOWS))):
        hard = rng.random() < HARD_SHADOWS
        edge = rng.uniform(0.5, 2.0) * scale if hard else rng.uniform(5, 60) * scale
        light *= 1 - rng.uniform(0.2, 0.6) * _shadow((hh, hw), target, edge / 2, rng)
    # Auto-exposure: the camera brings the scene's mean to mid-grey or a bit above.
    mean = float(light.mean()) * float(surface.mean())
    light *= np.clip(rng.uniform(0.35, 0.7) / mean, 0.5, 3.0)
    grain = rng.random((hh, hw), dtype=np.float32) - 0.5
    light *= 1 + grain * rng.uniform(0.0, 0.12 if chalk else 0.06)
    # Colour (in BGR, as cv2.imencode wants, and 0-255), chalk haze, coarse chroma noise.
    image = light[..., None] * (surface[::-1] * 255).astype(np.float32)
    if chalk:  # the haze of wiped-off chalk
        haze = np.maximum(_smooth_noise((hh, hw), int(rng.integers(3, 8)), rng), 0)
        haze *= rng.uniform(0, 0.12)
        image += (light * haze)[..., None] * (ink[::-1] * 255).astype(np.float32)
    chroma: np.ndarray = rng.random((hh // 2 + 1, hw // 2 + 1, 3), dtype=np.float32) - 0.5
    chroma = cv2.resize(chroma, (hw, hh), interpolation=cv2.INTER_LINEAR)
    image *= 1 + chroma * rng.uniform(0, 0.1)
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)

    # --- specks (dust; fibres in recycled paper), then the ink: dye darkens, chalk covers
    specks = rng.integers(30, 300) if style.surface_kind == "recycled" else rng.integers(0, 12)
    for _ in range(int(specks)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        radius = max(1, round(rng.uniform(0.5, 2.5) * scale))
        colour = image[y, x] * rng.uniform(0.35, 0.9)
        cv2.circle(image, (x, y), radius, colour.tolist(), -1)
    a = alpha[..., None]
    bgr_ink, bgr_surface = ink[::-1].astype(np.float32), surface[::-1].astype(np.float32)
    if chalk:
        image[y0:y1, x0:x1] *= 1 - a + a * (bgr_ink / bgr_surface)
    else:
        image[y0:y1, x0:x1] *= 1 - a * (1 - bgr_ink)

    # --- sensor noise, tone curve, JPEG
    noise = rng.random((h, w), dtype=np.float32)  # uniform, sigma 12**-0.5
    noise *= rng.uniform(0.004, 0.035) * 255 * 12**0.5
    image += (noise - noise.mean())[..., None]
    out = cv2.convertScaleAbs(image)  # saturates at 255 (|x|: a noisy black stays near black)
    gamma = rng.uniform(0.8, 1.25)
    out = cv2.LUT(out, (255 * (np.arange(256) / 255) ** (1 / gamma)).round().astype(np.uint8))
    quality = int(rng.integers(40, 96))
    ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def _draws(total: int, n: int, seed: int) -> list[tuple[int, np.random.Generator]]:
    """A seeded sample of ``n`` of ``total`` images (any part of the set, not its start) and an
    independent generator for each photo: photo k is the same whichever ``n`` is asked for."""
    if not 1 <= n <= total:
        raise ValueError(f"n must be between 1 and {total}, got {n}")
    order = np.random.default_rng(seed).permutation(total)[:n]
    children = np.random.SeedSequence(seed).spawn(n)
    return [(int(i), np.random.default_rng(c)) for i, c in zip(order, children, strict=True)]


def render_set(images, labels, n: int, seed: int) -> list[tuple[bytes, int]]:
    """``n`` photos (JPEG bytes, label) of a seeded random sample of ``images`` [N, 28, 28]."""
    images, labels = np.asarray(images), np.asarray(labels)
    return [
        (render_photo(images[i], rng), int(labels[i])) for i, rng in _draws(len(images), n, seed)
    ]


def write_set(out: str | Path, n: int = 1000, seed: int = 0, images=None, labels=None) -> Path:
    """Write ``n`` photos of MNIST test digits to ``out`` (00000.jpg, ...) and ``labels.csv``
    (file, label, index in the test set); returns the CSV's path."""
    if images is None or labels is None:
        from mnist_lab.data.files import load_split

        images, labels = load_split("test")
    images, labels = np.asarray(images), np.asarray(labels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (i, rng) in enumerate(_draws(len(images), n, seed)):
        name = f"{k:05d}.jpg"
        (out / name).write_bytes(render_photo(images[i], rng))
        rows.append((name, int(labels[i]), i))
    csv_path = out / "labels.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "index"])
        writer.writerows(rows)
    return csv_path


USAGE = "usage: python -m mnist_lab.photos out=DIR [n=1000] [seed=0]"


class SetArgs(TypedDict):
    """The arguments of ``write_set``, as ``parse_args`` reads them."""

    out: str
    n: int
    seed: int


def parse_args(argv: list[str]) -> SetArgs:
    """``key=value`` arguments (out, n, seed); ValueError with a message for anything else."""
    out: str | None = None
    numbers = {"n": 1000, "seed": 0}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in ("out", "n", "seed") or not value:
            raise ValueError(f"unknown argument {item!r}")
        if key == "out":
            out = value
            continue
        try:
            numbers[key] = int(value)
        except ValueError:
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if out is None:
        raise ValueError("out=DIR is required")
    return {"out": out, "n": numbers["n"], "seed": numbers["seed"]}


def main(argv: list[str] | None = None) -> None:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        csv_path = write_set(args["out"], args["n"], args["seed"])
    except ValueError as err:
        print(f"error: {err}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args['n']} photos and {csv_path}")
