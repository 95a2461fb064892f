"""mnist_lab.serving.preprocess: any photo, scan or drawing to an MNIST-style 28x28 digit, and
the one clear refusal of every image it cannot read."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lab.serving import preprocess
from mnist_lab.serving.preprocess import (
    ImageError,
    ImageTooLargeError,
    decode_image,
    pixels_to_image,
    to_mnist,
)
from tests.helpers import render_photo


def center_of_mass(image: torch.Tensor) -> tuple[float, float]:
    w = image.float()
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    return float((rows * w).sum() / w.sum()), float((cols * w).sum() / w.sum())


def test_photo_is_turned_into_an_mnist_style_digit(datamodule):
    """Inverted to white-on-black, 20 px on its longer side, centre of mass at the centre, and
    close to the original MNIST image it was rendered from."""
    images, _ = datamodule.tensors["test"]
    rng = np.random.default_rng(1)
    for i in range(20):
        array = to_mnist(decode_image(render_photo(images[i].numpy(), rng)))
        assert isinstance(array, np.ndarray) and array.shape == (28, 28) and array.dtype == np.uint8
        out = torch.from_numpy(array)
        assert out[0].max() == 0 and out[:, 0].max() == 0  # black border: the paper is gone
        rows = torch.nonzero(out.sum(1) > 0)
        cols = torch.nonzero(out.sum(0) > 0)
        extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        assert 19 <= extent <= 22
        r, c = center_of_mass(out)
        assert abs(r - 13.5) < 1.0 and abs(c - 13.5) < 1.0
        reference = images[i].float() / 255
        similarity = torch.nn.functional.cosine_similarity(
            out.float().flatten() / 255, reference.flatten(), dim=0
        )
        assert similarity > 0.7, (i, similarity)


def test_inversion_is_automatic(datamodule):
    """White ink on black and black ink on white give the same 28x28 result."""
    digit = datamodule.tensors["test"][0][3].numpy()
    big = Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC)
    white_on_black = to_mnist(big).astype(int)
    black_on_white = to_mnist(Image.fromarray(255 - np.asarray(big))).astype(int)
    assert np.abs(white_on_black - black_on_white).max() <= 4  # rounding only
    # A transparent canvas drawing (RGBA, dark strokes on nothing) is ink on paper too.
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    rgba.putalpha(big)
    assert np.abs(to_mnist(rgba).astype(int) - white_on_black).mean() < 3


def test_mnist_digits_pass_through_nearly_unchanged(datamodule):
    """Already MNIST-style input (the JSON pixels form) is left about as it was: at most a
    one-pixel shift from rounding the centre of mass (compared after a 3x3 blur)."""
    images, _ = datamodule.tensors["test"]

    def blurred(image: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(image.float()[None, None], 3, 1, 1).flatten()

    diffs, similarities = [], []
    for i in range(50):
        out = torch.from_numpy(to_mnist(pixels_to_image(images[i].tolist())))
        similarity = torch.nn.functional.cosine_similarity(blurred(out), blurred(images[i]), dim=0)
        assert similarity > 0.75, (i, similarity)
        similarities.append(float(similarity))
        diffs.append((out.float() - images[i].float()).abs().mean().item())
    assert sum(similarities) / len(similarities) > 0.9
    assert sum(diffs) / len(diffs) < 6  # gray levels out of 255


def test_mnist_style_input_takes_the_short_path_with_the_same_result(datamodule, monkeypatch):
    """28x28 white-on-black input skips the photo pipeline (the server's JSON form): only the
    20-px box and the centre of mass, MNIST's own last step. Its output stays close to the
    full pipeline's; a 28x28 black-on-white digit still goes the full way and is inverted."""
    images = datamodule.tensors["test"][0][:100].numpy()
    short = [to_mnist(Image.fromarray(im)) for im in images]
    assert all(preprocess._already_mnist(Image.fromarray(im)) is not None for im in images)
    inverted = Image.fromarray(255 - images[0])
    assert preprocess._already_mnist(inverted) is None
    assert np.abs(to_mnist(inverted).astype(int) - short[0]).mean() < 12
    monkeypatch.setattr(preprocess, "_already_mnist", lambda image: None)  # the full pipeline
    full = [to_mnist(Image.fromarray(im)) for im in images]
    diffs = [np.abs(a.astype(int) - b).mean() for a, b in zip(short, full, strict=True)]
    assert np.mean(diffs) < 8, np.mean(diffs)  # gray levels out of 255

    # and the short path stays closer to the digit as it was (MNIST's own normalisation)
    def off(outs: list[np.ndarray]) -> float:
        pairs = zip(outs, images, strict=True)
        return float(np.mean([np.abs(o.astype(int) - im).mean() for o, im in pairs]))

    assert off(short) <= off(full), (off(short), off(full))


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", ImageError, "empty"),
        (b"not an image at all", ImageError, "not a recognised image format"),
        (b"x" * (5 * 2**20 + 1), ImageTooLargeError, "5 MB"),
    ],
)
def test_bad_image_bytes_are_refused_with_a_reason(data, error, message):
    with pytest.raises(error, match=message):
        decode_image(data)


def test_truncated_and_bomb_images_are_refused():
    buf = io.BytesIO()
    Image.new("L", (300, 300), 255).save(buf, format="JPEG")
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    bomb = io.BytesIO()
    # 100 Mpixel in ~15 kB: under the 5 MB byte limit, so only the pixel limit can refuse it
    Image.new("1", (10_000, 10_000)).save(bomb, format="PNG")
    with pytest.raises(ImageTooLargeError, match=r"decompression bomb|pixel limit"):
        decode_image(bomb.getvalue())


def test_blank_image_and_bad_pixels_are_refused():
    with pytest.raises(ImageError, match="no digit found"):
        to_mnist(Image.new("L", (100, 100), 255))
    with pytest.raises(ImageError, match="28x28"):
        pixels_to_image([[0] * 28] * 27)
    with pytest.raises(ImageError, match="between 0 and 255"):
        pixels_to_image([[300] * 28] * 28)
    with pytest.raises(ImageError, match="28x28 array of numbers"):
        pixels_to_image([["a"] * 28] * 28)


def test_large_jpeg_is_decoded_small_and_read_like_the_full_decode(datamodule):
    """A 12-MP JPEG is decoded by DCT scaling near the analysis size (not at 4000x3000), and
    the digit read from it matches the one read from the full decode of the same file."""
    from mnist_lab.tools.photos import render_photo as phone_photo

    images = datamodule.tensors["test"][0][:3].numpy()
    for i, digit in enumerate(images):
        photo = cv2.imdecode(
            np.frombuffer(phone_photo(digit, np.random.default_rng(i)), np.uint8), 1
        )
        big = cv2.resize(photo, (4000, 3000), interpolation=cv2.INTER_CUBIC)
        data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        reduced = decode_image(data)
        assert preprocess.ANALYSIS_SIDE <= max(reduced.size) < 2 * preprocess.ANALYSIS_SIDE
        full = Image.open(io.BytesIO(data))
        full.load()
        assert full.size == (4000, 3000)
        a, b = to_mnist(reduced).astype(float), to_mnist(full).astype(float)
        similarity = (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())
        assert similarity > 0.9, (i, similarity)


def test_polarity_is_read_from_the_ink_channel(datamodule):
    """Dark ink: the darkest channel per pixel; light ink: the brightest (coloured ink and
    chalk read at full strength); a grayscale image is its own channel."""
    rgb = np.array([[[0.2, 0.5, 0.9], [0.7, 0.1, 0.4]]], np.float32)
    assert np.allclose(preprocess._ink_gray(rgb, dark=True), [[0.2, 0.1]])
    assert np.allclose(preprocess._ink_gray(rgb, dark=False), [[0.9, 0.7]])
    gray = rgb[..., :1]
    assert np.allclose(preprocess._ink_gray(gray, dark=True), gray[..., 0])


# Photos of `python -m mnist_lab.photos` (seed: photo numbers) where a shadow's block or a band
# of shade along the photo's edge used to be taken for the digit or glued to it.
SHADED = {0: (190, 299, 455, 558, 917), 1: (59, 422, 460, 647), 2: (128,)}


def test_shade_blocks_and_edge_bands_are_not_taken_for_the_digit(datamodule):
    """Rendered phone photos with hard shadows, rendered one by one as the photo set draws them:
    the shipped model reads each digit once preprocessing leaves the shade out (the block test:
    a part whose typical width is over a third of its size is shade; the edge test: a part
    running along the photo's edge for a sizeable share of its outline is shade)."""
    from mnist_lab.paths import SHIPPED_MODEL
    from mnist_lab.serving.predictor import OnnxPredictor
    from mnist_lab.tools.photos import _draws, render_photo

    images, labels = datamodule.tensors["test"]
    model = OnnxPredictor(SHIPPED_MODEL, threads=1)
    for seed, numbers in SHADED.items():
        draws = _draws(len(images), max(numbers) + 1, seed)
        for k in numbers:
            i, rng = draws[k]
            digit = to_mnist(decode_image(render_photo(images[i].numpy(), rng)))
            read = int(model.probabilities(digit[None]).argmax())
            assert read == int(labels[i]), (seed, k, read, int(labels[i]))
