"""Turn a photo, scan or canvas drawing of one digit into a 28x28 MNIST-style image.

MNIST digits were made by size-normalising each digit into a 20x20 box (keeping its aspect
ratio, anti-aliased) and centring its centre of mass in a 28x28 field, white ink on black.
A model only recognises user images prepared the same way, so ``predict``, ``serve`` and the
draw-a-digit page all go through :func:`to_mnist` — this is the only copy of that logic.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

MAX_BYTES = 5 * 1024 * 1024  # uploads over 5 MB are refused before decoding
MAX_PIXELS = 40_000_000  # ~6300x6300: larger images are refused as decompression bombs
WORK_SIDE = 1024  # photos are shrunk to this longer side first: the digit ends up 20 px anyway
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """The input is not a usable image of a digit; the message says why and what to send."""


class ImageTooLargeError(ImageError):
    """Over the byte or pixel limit (the server answers 413)."""


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
            if image.format == "JPEG":
                image.draft("L", (WORK_SIDE, WORK_SIDE))  # decode a 12 MP photo at 1/4 scale
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
        array = np.asarray(pixels, dtype=np.float64)
    except (TypeError, ValueError):
        raise ImageError("'pixels' must be a 28x28 array of numbers 0-255") from None
    if array.shape != (28, 28):
        raise ImageError(
            f"'pixels' must be a 28x28 array of numbers 0-255, got shape {array.shape}"
        )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise ImageError("'pixels' values must be finite numbers between 0 and 255")
    return Image.fromarray(array.round().astype(np.uint8), mode="L")


def _grayscale(image: Image.Image) -> np.ndarray:
    """Float gray in [0, 1]; transparent pixels (canvas drawings) count as background."""
    image = ImageOps.exif_transpose(image)  # phone photos: apply the camera's rotation
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
        gray = np.asarray(rgba.convert("L"), dtype=np.float32) / 255
        # Composite over the colour opposite to the ink, so ink stays ink.
        ink_is_dark = (gray[alpha > 0.5].mean() if (alpha > 0.5).any() else 0.0) < 0.5
        background = 1.0 if ink_is_dark else 0.0
        return gray * alpha + background * (1 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255


def _center_of_mass(digit: np.ndarray) -> tuple[int, int]:
    total = digit.sum()
    rows, cols = np.indices(digit.shape)
    return (
        round(float((rows * digit).sum() / total)),
        round(float((cols * digit).sum() / total)),
    )


def to_mnist(image: Image.Image) -> torch.Tensor:
    """uint8 [28, 28], white digit on black, size-normalised and centred as MNIST was."""
    gray = _grayscale(image)
    # Background = the border's median; dark ink on light paper is inverted to white-on-black.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = gray if background < 0.5 else 1.0 - gray
    background = min(background, 1.0 - background)
    # Stretch so paper -> 0 and the strongest ink -> 1; lighting and paper colour drop out.
    peak = float(np.percentile(ink, 99.9))
    if peak - background < 0.15:
        raise ImageError("no digit found: the image has no visible ink (blank or too faint)")
    ink = np.clip((ink - background) / (peak - background), 0.0, 1.0)
    # The ink's bounding box, on a median-filtered copy so specks of noise do not widen it.
    smooth = Image.fromarray((ink * 255).astype(np.uint8)).filter(ImageFilter.MedianFilter(3))
    mask = np.asarray(smooth) > 0.2 * 255
    if not mask.any():
        raise ImageError("no digit found: the ink is too faint or too thin to locate")
    rows, cols = np.where(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    ink[ink < 0.2] = 0.0  # paper noise and JPEG ringing are not ink
    crop = ink[top:bottom, left:right]
    # Longer side -> 20 px, aspect kept; BOX resampling averages like MNIST's anti-aliasing.
    height, width = crop.shape
    scale = 20.0 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.Resampling.BOX)
    digit = np.asarray(small, dtype=np.float32)
    # Paste so the centre of mass lands on the field's centre (14, 14).
    com_row, com_col = _center_of_mass(digit)
    field = np.zeros((28 + 2 * 20, 28 + 2 * 20), dtype=np.float32)  # margin: never clip
    top, left = 20 + 14 - com_row, 20 + 14 - com_col
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    out = field[20:48, 20:48]
    if out.max() > 0:
        out = out * (255.0 / out.max())
    return torch.from_numpy(out.round().clip(0, 255).astype(np.uint8))
