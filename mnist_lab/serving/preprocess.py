"""Turn a photo, scan or canvas drawing of one digit into a 28x28 MNIST-style image.

MNIST digits were made by size-normalising each digit into a 20x20 box (keeping its aspect
ratio, anti-aliased) and centring its centre of mass in a 28x28 field, white ink on black.
A model only recognises user images prepared the same way, so ``predict``, ``serve`` and the
draw-a-digit page all go through :func:`to_mnist` — this is the only copy of that logic.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_lab.errors import ImageError, ImageTooLargeError

MAX_BYTES = 5 * 1024 * 1024  # uploads over 5 MB are refused before decoding
MAX_PIXELS = 40_000_000  # ~6300x6300: larger images are refused as decompression bombs
ANALYSIS_SIDE = 400  # photos are analysed at this longer side: the digit ends up 20 px anyway,
# and one 10 % of a 16:10 photo's shorter side is still 25 px; a JPEG is decoded near this size
# already (DCT scaling: a 12 MP photo at 1/8 of its resolution, a 1-2 MP one at 1/2 or 1/4)
SKIP = 0.02
SURVEY_SIDE = 280  # the first look at stroke width and polarity is at this size
ORIENTATION = 0x0112  # the EXIF tag of the camera's rotation
SHAPE_SIDE = 112  # the cropped digit's stroke width is measured and normalised at this size
STROKE_RANGE = (1.6, 3.9)  # stroke widths (px in MNIST's 20-px box) left as they are
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes safely: size cap, decompression-bomb cap, full decode up front."""
    if not data:
        raise ImageError("empty file: send a PNG or JPEG image of one digit")
    if len(data) > MAX_BYTES:
        raise ImageTooLargeError(
            f"image is {len(data) / 2**20:.1f} MB, over the {MAX_BYTES // 2**20} MB limit: "
            "send a smaller PNG or JPEG"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"image is {image.width}x{image.height} pixels, over the "
                    f"{MAX_PIXELS:,}-pixel limit (decompression bomb?): send a smaller image"
                )
            f = ANALYSIS_SIDE / max(image.size)
            if image.format == "JPEG" and f < 1:  # decode at 1/2 .. 1/8 scale, >= this size
                image.draft("RGB", (math.ceil(image.width * f), math.ceil(image.height * f)))
            image.load()  # decode now, so a truncated file fails here and not later
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format: send a PNG or JPEG file") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"not a readable image ({type(err).__name__}: {err}): send a PNG or JPEG file"
        ) from None
    return image


def read_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        return decode_image(path.read_bytes())
    except ImageError as err:
        raise ImageError(f"{path}: {err}") from None


def image_paths(items: list[str] | str) -> list[Path]:
    """Files as given, and the images (by suffix, sorted) inside any folder given."""
    found: list[Path] = []
    for item in [items] if isinstance(items, str) else items:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    if not found:
        raise ImageError(f"no images found in {items} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def pixels_to_image(pixels: object) -> Image.Image:
    """A 28x28 nested list of 0-255 values (the JSON form) as a grayscale image."""
    try:
        array = np.asarray(pixels)
    except (TypeError, ValueError, RecursionError, OverflowError):  # ragged, too deep
        raise ImageError("'pixels' must be a 28x28 array of numbers 0-255") from None
    if array.dtype.kind not in "biuf":  # strings, objects: numpy would convert "12" quietly
        raise ImageError("'pixels' must be a 28x28 array of numbers 0-255, not strings or objects")
    if array.shape != (28, 28):
        raise ImageError(
            f"'pixels' must be a 28x28 array of numbers 0-255, got shape {array.shape}"
        )
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise ImageError("'pixels' values must be finite numbers between 0 and 255")
    return Image.fromarray(array.round().astype(np.uint8), mode="L")


def _rgb(image: Image.Image) -> np.ndarray:
    """Float [H, W, C] in [0, 1] (C = 1 for grayscale input, else 3), at most ANALYSIS_SIDE on
    the longer side; transparent pixels (canvas drawings) become background."""
    if image.getexif().get(ORIENTATION, 1) != 1:  # phone photos: apply the camera's rotation
        image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = _shrink(image, "RGBA").astype(np.float32) / 255
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        opaque = alpha[..., 0] > 0.5
        # Composite over the colour opposite to the ink, so ink stays ink.
        ink_is_dark = (rgb[opaque].mean() if opaque.any() else 0.0) < 0.5
        return rgb * alpha + (1.0 if ink_is_dark else 0.0) * (1 - alpha)
    if image.mode in ("L", "I", "I;16", "F", "1"):
        return _shrink(image, "L").astype(np.float32)[..., None] / 255
    return _shrink(image, "RGB").astype(np.float32) / 255


def _shrink(image: Image.Image, mode: str) -> np.ndarray:
    """uint8 pixels in ``mode``, averaged down (INTER_AREA) to at most ANALYSIS_SIDE."""
    pixels = np.asarray(image if image.mode == mode else image.convert(mode))
    if max(pixels.shape[:2]) > ANALYSIS_SIDE:
        pixels = _resize(pixels, ANALYSIS_SIDE)
    return pixels


def _odd(x: float, lo: int = 3, hi: int = 255) -> int:
    return int(min(hi, max(lo, round(x) // 2 * 2 + 1)))


def _resize(image: np.ndarray, longer: int) -> np.ndarray:
    h, w = image.shape[:2]
    f = longer / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected parts of a mask: count (with the background), labels, stats."""
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask.astype(np.uint8), 8, cv2.CV_32S, cv2.CCL_SAUF
    )
    return count, labels, stats


def _major_parts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The parts of a mask at least a tenth the size of its biggest (specks and noise left out),
    and the biggest alone."""
    count, labels, stats = _components(mask)
    if count < 2:
        return mask.astype(bool), mask.astype(bool)
    area = stats[1:, cv2.CC_STAT_AREA]
    major = np.zeros(count, bool)
    major[1:] = area >= 0.1 * area.max()
    return major[labels], labels == 1 + int(np.argmax(area))


def _stroke_width(mask: np.ndarray, percentile: float = 75) -> float:
    """Stroke width of a binary mask: twice the distance to the edge along the strokes' centre
    lines (the ridge of the distance transform), at a percentile along their length."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    ridge = (inside > 0) & (inside >= cv2.dilate(inside, np.ones((3, 3), np.uint8)))
    if not ridge.any():
        return 1.0
    return max(1.0, 2 * float(np.percentile(inside[ridge], percentile)) - 1)


def _widest(mask: np.ndarray) -> float:
    """Diameter of the widest blot (largest inscribed circle) in a mask."""
    return 2 * float(cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3).max())


def _top(values: np.ndarray) -> float:
    """About the 50th largest value (fewer in small images): a peak that a few hot pixels
    cannot set (taken from the maxima of 2x2 blocks, a quarter of the work)."""
    k = max(3, min(50, values.size // 2000))
    if values.size > 16 * k and k >= 8:
        values, k = cv2.dilate(values, np.ones((2, 2), np.uint8))[::2, ::2], k // 4
    flat = values.ravel()
    return float(np.partition(flat, -k)[-k]) if flat.size > k else float(flat.max())


@dataclass
class _Reading:
    """One polarity's reading of the image: ink level (0-1), the digit's pixels and a score."""

    level: np.ndarray
    mask: np.ndarray
    score: float


def _envelope(gray: np.ndarray, kernel: float, dark: bool) -> np.ndarray:
    """The paper under the ink: a closing (dark ink) or opening (light ink) with a square
    ``kernel`` removes every stroke narrower than it and keeps gradients and shadow edges
    exactly, however sharp. Big kernels run on a smaller copy, so they stay <= 61 px."""
    scale = min(1.0, 61 / kernel)
    work = gray if scale == 1 else _resize(gray, max(1, round(max(gray.shape) * scale)))
    size = _odd(kernel * scale, hi=61)
    paper = cv2.morphologyEx(
        work,
        cv2.MORPH_CLOSE if dark else cv2.MORPH_OPEN,
        cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)),
    )
    if scale < 1:
        paper = cv2.resize(paper, gray.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return paper


@dataclass
class _Survey:
    """A cheap first look at one polarity: the majority background, stroke width, widest blot
    (px at the analysis size) and how much ink-like contrast there is."""

    gray: np.ndarray
    median: np.ndarray
    width: float
    blot: float
    evidence: float


def _survey(gray: np.ndarray, dark: bool) -> _Survey:
    """Ink against the median of a large window (the paper is the majority in it, whatever the
    ink's width), on a small copy: enough to size the kernels and to rule out a polarity."""
    if min(gray.shape) >= 100:  # a photo's sensor noise and JPEG grain (not a 28x28 digit's)
        gray = cv2.GaussianBlur(gray, (3, 3), 0)
    sign = 1.0 if dark else -1.0
    small = _resize(gray, 128)
    median = cv2.medianBlur((small * 255).round().astype(np.uint8), _odd(0.8 * min(small.shape)))
    median = median.astype(np.float32) / 255
    view = _resize(gray, min(SURVEY_SIDE, max(gray.shape)))
    factor = max(gray.shape) / max(view.shape)
    around = cv2.resize(median, view.shape[::-1], interpolation=cv2.INTER_LINEAR)
    rough = np.maximum(sign * (around - view), 0) / ((around if dark else view) + 0.02)
    peak = _top(rough)
    if peak <= 0.05:
        return _Survey(gray, median, 1.0, 1.0, 0.0)
    strokes, _ = _major_parts(rough > 0.5 * peak)
    _, biggest = _major_parts(rough > 0.25 * peak)
    width = factor * _stroke_width(strokes)
    return _Survey(
        gray, median, width, factor * _widest(biggest), float(rough[strokes].sum()) * factor**2
    )


def _repair_corners(paper: np.ndarray, gray: np.ndarray, kernel: float, dark: bool) -> np.ndarray:
    """Give back to the shadow what the closing took from it. The closing cannot enter a
    shadow's corner narrower than its kernel and lights it up as if it were a stroke; but such
    a corner is flat, continuing the shadow next to it at the same gray. So lower the paper
    estimate step by step into neighbours whose gray matches the neighbouring paper level:
    flat paper takes it, a stroke (darker than any paper around it) does not. On a copy
    where the kernel is ~8 px; only the change is scaled back, so edges stay sharp."""
    sign = 1.0 if dark else -1.0
    side = max(8, round(max(gray.shape) * min(1.0, 8 / kernel)))
    level = _resize(sign * paper, side)
    image = _resize(sign * gray, side)
    tolerance = 0.06 * float(np.median(np.abs(level))) + 0.01
    repaired = level.copy()
    for _ in range(12):
        lower = cv2.erode(repaired, np.ones((3, 3), np.uint8))
        accept = (lower < repaired - tolerance) & (np.abs(image - lower) < tolerance)
        if not accept.any():
            break
        repaired[accept] = lower[accept]
    change = cv2.resize(level - repaired, gray.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return paper - sign * change


def _read(survey: _Survey, dark: bool) -> _Reading:
    """Find the digit assuming dark ink on light paper (``dark``) or light ink on a dark board.

    The survey's ``gray`` is the channel where that ink is strongest (the darkest or the
    brightest of R, G, B), so coloured ink reads as well as black. Raises ImageError when
    there is no ink.
    """
    gray, width, blot = survey.gray, survey.width, survey.blot
    sign = 1.0 if dark else -1.0

    def strength(paper: np.ndarray) -> np.ndarray:
        # Ink relative to the local paper (or board) brightness: light and shadow multiply
        # both, so a stroke in a shadow reads as strong as one in the light.
        return np.maximum(sign * (paper - gray), 0) / (paper + (0.05 if dark else 0.08))

    # 2. The paper under the strokes, and the ink.
    paper = _repair_corners(_envelope(gray, 2.5 * width + 5, dark), gray, 2.5 * width + 5, dark)
    ink = strength(paper)
    # Pressure, pen and light vary along a stroke: measure each pixel against the strongest
    # ink near it (within about a stroke width), so a faint stroke next to a strong one, or a
    # stroke half in a shadow, reads as one stroke. Far from any ink this leaves the ratio to
    # the image's peak, so paper texture stays low.
    peak = _top(ink)
    near = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_RECT, (_odd(2 * width + 1),) * 2))
    level = ink / np.maximum(near, 0.35 * peak + 1e-6)
    # Noise: additive in gray levels, so strokes must also stand out in absolute terms (the
    # ratio alone would amplify the noise of deep shadows).
    diff = sign * (paper - gray)
    sample = diff.ravel()[:: max(1, diff.size // 20000)]
    noise = 1.4826 * float(np.median(np.abs(sample - np.median(sample)))) + 2e-3
    candidates = (diff > 4 * noise) & (level > 0.35)
    mask, doubtful = _digit_mask(ink, candidates, sign * gray, sign * paper, 0.5 * width)
    # 3. Blots wider than the kernel (a loop filled in, a marker's blot) stayed in the paper.
    # A wider kernel finds them, and with them the tips of shadows: keep the dark regions it
    # adds that touch the digit and, like ink and unlike a shadow, are surrounded by paper.
    if 1.3 * blot > 2.5 * width:
        wide = _envelope(gray, 1.3 * blot + 5, dark)
        typical = float(np.median(diff[mask]))
        added = (sign * (wide - paper) > 0.5 * typical) & (sign * (wide - gray) > 0.5 * typical)
        count, labels, stats = _components(added)
        if count > 1:
            reach = np.ones((_odd(width + 2),) * 2, np.uint8)
            touching = np.unique(labels[cv2.dilate(mask.astype(np.uint8), reach) > 0])
            h, w = mask.shape
            m = int(width) + 6
            for i in touching[touching > 0]:
                x, y, bw, bh = stats[i, :4]
                x0, y0 = max(0, x - m), max(0, y - m)
                x1, y1 = min(w, x + bw + m), min(h, y + bh + m)
                blob = (labels[y0:y1, x0:x1] == i).astype(np.uint8)
                if _like_ink(
                    blob,
                    sign * gray[y0:y1, x0:x1],
                    sign * wide[y0:y1, x0:x1],
                    0.5 * width,
                    mask[y0:y1, x0:x1],
                ):
                    mask[y0:y1, x0:x1] |= blob > 0
                    level[y0:y1, x0:x1][blob > 0] = 1.0
    # 4. Score: how much ink, times how clearly the ink departs from the majority around it:
    # gaps between strokes and lit patches between shadows are not darker or brighter than
    # the paper around them, the strokes are.
    median = cv2.resize(survey.median, gray.shape[::-1], interpolation=cv2.INTER_LINEAR)
    majority = np.maximum(sign * (median - gray), 0) / ((median if dark else gray) + 0.02)
    core = mask & (level >= np.median(level[mask]))
    symmetric = ink if dark else ink / (1 + ink)  # both on the scale 1 - darker / brighter
    score = float(symmetric[mask].sum()) * float(np.median(majority[core]))
    score *= 0.1 if doubtful else 1.0
    return _Reading(level, mask, score)


def _like_ink(
    part: np.ndarray,
    image: np.ndarray,
    paper: np.ndarray,
    edge: float,
    ink: np.ndarray | None = None,
) -> bool:
    """Whether a component looks like ink rather than a piece of shadow. Both are darker than
    the background estimate, but a stroke is surrounded by brighter paper, while the corner
    of a shadow continues into paper as dark as itself (the rest of the shadow). ``image``
    and ``paper``: the gray image and its background (negated for light ink, so ink is
    lower), cropped like ``part``; ``edge``: how far a stroke's soft edge reaches (px);
    ``ink``: other ink around it, which does not count."""
    gap = _odd(edge)
    ring = cv2.dilate(part, np.ones((gap + 4, gap + 4), np.uint8)) > 0
    ring &= cv2.dilate(part, np.ones((gap, gap), np.uint8)) == 0
    if ink is not None:
        ring &= ink == 0
    if not ring.any():
        return True
    inside = part > 0
    contrast = float(np.median(paper[inside] - image[inside]))
    own = cv2.erode(np.where(inside, image, np.inf).astype(np.float32), np.ones((gap + 4,) * 2))
    # Compared with the part's own darkest pixel next to it, a ring pixel is paper when it is
    # at least halfway to the paper's level there (and, noise aside, to the part's contrast).
    step = np.maximum(paper[ring] - own[ring], 0.5 * contrast)
    return float((image[ring] - own[ring] > 0.5 * step).mean()) >= 0.75


CONTACT = 0.15  # a part touching the photo's edge along this share of its box's w + h: shade
BLOB = 0.35  # a digit's strokes are at most ~a quarter of its size wide (a marker's)


def _blob(part: np.ndarray, diagonal: float) -> bool:
    """Whether a part is a block rather than strokes: its typical width (along the centre
    lines) over a third of its box's diagonal. A shadow's band or a lit patch is; a digit,
    even a marker's, is not (its strokes are at most ~a quarter of its height wide)."""
    inside = cv2.distanceTransform(part, cv2.DIST_L2, 3)
    ridge = (inside > 0) & (inside >= cv2.dilate(inside, np.ones((3, 3), np.uint8)))
    return bool(ridge.any()) and 2 * float(np.median(inside[ridge])) > BLOB * diagonal


def _digit_mask(
    ink: np.ndarray, candidates: np.ndarray, image: np.ndarray, paper: np.ndarray, edge: float
) -> tuple[np.ndarray, bool]:
    """The digit's pixels among ``candidates``: the strongest connected ink and the parts near
    it (a 4 or 5 drawn in two strokes, a broken pencil line), without specks, paper texture
    or shading residue. ``ink``: ink strength; ``image`` and ``paper``: the gray image and
    its background, negated for light ink (so ink is always darker than paper). Also says
    whether the mask is doubtful: no candidate looked like ink."""
    peak = _top(ink)
    sample = ink.ravel()[:: max(1, ink.size // 20000)]
    floor = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - floor))) + 1e-3
    if peak < max(0.1, floor + 6 * spread):
        raise ImageError("no digit found: the image has no visible ink (blank or too faint)")
    mask = (candidates & (ink > floor + 5 * spread)).astype(np.uint8)
    count, labels, stats = _components(mask)
    if count < 2:
        raise ImageError("no digit found: the ink is too faint or too thin to locate")
    on = mask.ravel() > 0
    mass = np.bincount(labels.ravel()[on], weights=ink.ravel()[on], minlength=count)
    mass[0] = 0
    h, w = mask.shape

    def ink_like(i: int, whole: bool = False) -> bool:
        x, y, bw, bh = stats[i, :4]
        # Lit or shaded bands run along the photo's edge; a digit touches it, if at all, with
        # a stroke's end: a short stretch, small against the part's size even where the
        # stroke width (and so ``edge``) was overestimated, as a big shadow makes it.
        contact = sum(
            int((labels[r, x : x + bw] == i).sum()) for r in {0, h - 1} if y <= r < y + bh
        ) + sum(int((labels[y : y + bh, c] == i).sum()) for c in {0, w - 1} if x <= c < x + bw)
        if contact > 8 * edge + 8 or (contact > CONTACT * (bw + bh) and contact > 4 * edge + 4):
            return False
        m = int(edge) + 6
        x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(w, x + bw + m), min(h, y + bh + m)
        part = (labels[y0:y1, x0:x1] == i).astype(np.uint8)
        # A block of shade is not a stroke: not as the digit, nor as a part of it bigger than
        # a dot (a broken pencil line's fragments are at least ~3 stroke widths long).
        diagonal = float(np.hypot(bw, bh))
        if (whole or diagonal > 8 * edge) and _blob(part, diagonal):
            return False
        return _like_ink(part, image[y0:y1, x0:x1], paper[y0:y1, x0:x1], edge)

    order = [int(i) for i in np.argsort(-mass) if mass[i] > 0]
    main = next((i for i in order[:5] if ink_like(i, whole=True)), None)
    doubtful = main is None  # nothing looks like ink: keep the strongest, but say so
    main = order[0] if main is None else main
    keep = {main}
    x, y, bw, bh = stats[main, :4]
    box = [x, y, x + bw, y + bh]
    parts = [i for i in order if i != main and mass[i] >= 0.02 * mass[main]]
    grew = True
    while grew:  # add parts near the digit until nothing more is near
        grew = False
        reach = 0.3 * max(box[2] - box[0], box[3] - box[1])
        for i in parts:
            if i in keep:
                continue
            px, py, pw, ph = stats[i, :4]
            gap = max(box[0] - (px + pw), px - box[2], box[1] - (py + ph), py - box[3], 0)
            inside = box[0] <= px and box[1] <= py and px + pw <= box[2] and py + ph <= box[3]
            # A big part within reach (a stroke); a small one only inside the digit's box or
            # right next to it: a speck or a shadow's sliver further out would move and shrink
            # the digit.
            big = gap <= reach and mass[i] >= 0.08 * mass[main]
            if (inside or big or gap <= reach / 3) and ink_like(i):
                keep.add(i)
                box = [min(box[0], px), min(box[1], py), max(box[2], px + pw), max(box[3], py + ph)]
                grew = True
    selected = np.zeros(count, bool)
    selected[list(keep)] = True
    return selected[labels], doubtful


def _normalise_strokes(crop: np.ndarray) -> np.ndarray:
    """Bring the stroke width into MNIST's range. A pencil line 1 % of the digit's height would
    end up a faint hairline at 20 px, a marker a blob; MNIST's strokes are 1.6-3.2 px wide
    (10th-90th percentile, measured like this) in its 20-px box."""
    original = crop
    crop = _resize(crop, SHAPE_SIDE)  # measure (and reshape) at a fixed resolution
    longer = max(crop.shape)
    width = _stroke_width(crop > 0.5, 50)
    mnist = width * 20 / longer
    low, high = STROKE_RANGE
    if low <= mnist <= high:
        return original
    target = (low + 0.3) if mnist < low else (high - 0.3)
    # Dilating (eroding) by r px widens (narrows) a stroke by 2r and the box by about as much.
    r = abs(target * longer - 20 * width) / (40 - 2 * target)
    size = _odd(2 * r + 1, lo=1)
    if size < 3:
        return crop
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    if mnist < low:
        pad = size // 2 + 1
        return cv2.dilate(np.pad(crop, pad), kernel)
    thinner = cv2.erode(crop, kernel)
    return thinner if thinner.max() > 0.5 else original


def _center_of_mass(digit: np.ndarray) -> tuple[int, int]:
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    return (
        round(float((rows * digit).sum() / total)),
        round(float((cols * digit).sum() / total)),
    )


def _already_mnist(image: Image.Image) -> np.ndarray | None:
    """The float pixels of a 28x28 grayscale image with a dark border (an MNIST digit, or a
    client that did its own preprocessing), else None: such an input needs only MNIST's own
    last step (fit the 20-px box, centre the mass), not the photo pipeline (~20x the CPU)."""
    if image.size != (28, 28) or image.mode != "L":
        return None
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    border = np.concatenate([pixels[:2].ravel(), pixels[-2:].ravel(), pixels[:, :2].ravel(),
                             pixels[:, -2:].ravel()])  # fmt: skip
    peak = float(pixels.max())
    # dark surroundings: a stroke may touch the edge (12 % of MNIST's test digits do)
    if peak < 0.2 or float(border.mean()) > 0.1 * peak or float(np.median(border)) > 0.05 * peak:
        return None
    return pixels


def _ink_gray(rgb: np.ndarray, dark: bool) -> np.ndarray:
    """The channel where ink is strongest, per pixel: the darkest of R, G, B for dark ink, the
    brightest for light ink, so coloured ink reads as well as black."""
    if rgb.shape[2] == 1:
        return rgb[..., 0]
    pick = np.minimum if dark else np.maximum
    return pick(pick(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _find(rgb: np.ndarray) -> _Reading:
    """The digit in an image (float [H, W, C]): both polarities read (dark ink on paper,
    or chalk / white ink on a dark board) unless the survey finds one far weaker, and the
    reading whose ink stands out most wins."""
    surveys = {dark: _survey(_ink_gray(rgb, dark), dark) for dark in (True, False)}
    strongest = max(s.evidence for s in surveys.values())
    readings, errors = [], []
    for dark, survey in surveys.items():
        if survey.evidence < SKIP * strongest:
            continue
        try:
            readings.append(_read(survey, dark))
        except ImageError as err:
            errors.append(err)
    if not readings:
        raise (
            errors[0]
            if errors
            else ImageError("no digit found: the image has no visible ink (blank or too faint)")
        )
    return max(readings, key=lambda r: r.score)  # max() keeps the first (dark ink) on a tie


def to_mnist(image: Image.Image) -> np.ndarray:
    """uint8 [28, 28], white digit on black, size-normalised and centred as MNIST was."""
    pixels = _already_mnist(image)
    if pixels is not None:
        rows, cols = np.where(pixels > 0.15 * pixels.max())
        return _place(pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
    best = _find(_rgb(image))
    level, mask = best.level, best.mask
    rows, cols = np.where(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    # Anti-aliased edges next to the digit's strokes stay; everything else in the box goes.
    near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))[top:bottom, left:right]
    crop = level[top:bottom, left:right] * near
    high = float(np.percentile(crop[mask[top:bottom, left:right]], 75))
    crop = np.clip((crop - 0.15) / max(high - 0.15, 1e-6), 0, 1).astype(np.float32)
    return _place(_normalise_strokes(crop))


def _place(crop: np.ndarray) -> np.ndarray:
    """MNIST's last step: the digit's box scaled to 20 px, its centre of mass at (14, 14)."""
    # Longer side -> 20 px, aspect kept; INTER_AREA averages like MNIST's anti-aliasing.
    height, width = crop.shape
    scale = 20.0 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = cv2.resize(crop.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    if digit.max() <= 0:
        raise ImageError("no digit found: the ink is too faint or too thin to locate")
    # Paste so the centre of mass lands on the field's centre (14, 14).
    com_row, com_col = _center_of_mass(digit)
    field = np.zeros((28 + 2 * 20, 28 + 2 * 20), dtype=np.float32)  # margin: never clip
    top, left = 20 + 14 - com_row, 20 + 14 - com_col
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    out = field[20:48, 20:48]
    if out.max() > 0:
        out = out * (255.0 / out.max())
    return out.round().clip(0, 255).astype(np.uint8)
