"""``bench photos``: rendered phone photos read by the shipped model (or ``--model``): accuracy
per seed, median ms per photo of the whole predict path, per 12-MP JPEG, and the predict
command's wall time per photo (start-up included)."""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from mnist_lab.evaluation.loading import load_predictor
from mnist_lab.serving.preprocess import ImageError, read_image, to_mnist
from mnist_lab.tools.photos import write_set

SHIPPED = Path(__file__).parents[1] / "serving" / "model" / "digits.onnx"
BIG = (4000, 3000)  # a 12-MP phone photo


def _read_one(predictor: Any, path: Path) -> tuple[int, float]:
    """The digit read from one image file as ``predict`` reads it (-1: refused), and the ms
    it took: read, decode, to_mnist, model."""
    start = time.perf_counter()
    try:
        digit = int(predictor.probabilities(to_mnist(read_image(path))[None])[0].argmax())
    except ImageError:
        digit = -1
    return digit, 1000 * (time.perf_counter() - start)


def _read_set(predictor: Any, folder: Path) -> tuple[int, list[float], list[str]]:
    """Photos right, ms per photo, and the misread files."""
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    right, times, wrong = 0, [], []
    for row in rows:
        digit, ms = _read_one(predictor, folder / row["file"])
        times.append(ms)
        if digit == int(row["label"]):
            right += 1
        else:
            wrong.append(f"{row['file']}: {row['label']} read as {digit}")
    return right, times, wrong


def _twelve_mp(folder: Path, out: Path, count: int) -> list[Path]:
    """The first ``count`` photos upscaled to 4000x3000 (or 3000x4000), JPEG quality 90."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted(folder.glob("*.jpg"))[:count]:
        image = cv2.imread(str(source))
        if image is None:
            raise OSError(f"{source}: not readable")
        size = BIG if image.shape[1] >= image.shape[0] else BIG[::-1]
        big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
        path = out / source.name
        cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def _command_seconds(folder: Path, model: Path, threads: int, work: Path) -> float:
    """Wall seconds of ``python -m mnist_lab.predict images=[folder] output=json`` (its exit
    status is 1 where a photo was refused, "no digit found": still timed)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_lab.predict", f"ckpt_path={model}", f"images=[{folder}]",
         "output=json", f"threads={threads}", f"hydra.run.dir={work / 'predict_run'}"],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    refused = proc.returncode == 1 and "no digit found" in proc.stderr  # a photo, not predict
    if proc.returncode != 0 and not refused:
        raise RuntimeError(f"predict failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def bench_photos(
    quick: bool, seeds: list[int], threads: int, model: str | None = None, n: int = 1000
) -> dict[str, Any]:
    """Per seed: ``n`` photos from ``mnist_lab.photos``, read one at a time as ``predict`` reads
    them; then 12-MP JPEGs (seed 0's first photos upscaled) and the predict command itself."""
    n = 20 if quick else n
    path = Path(model) if model else SHIPPED
    cv2.setNumThreads(threads)
    predictor = load_predictor(path, threads=threads)
    result: dict[str, Any] = {"model": str(path), "n": n, "threads": threads, "seeds": {}}
    all_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in seeds:
            folder = work / f"seed{seed}"
            write_set(folder, n, seed)
            right, times, wrong = _read_set(predictor, folder)
            all_times += times
            result["seeds"][str(seed)] = {
                "accuracy": right / n,
                "right": right,
                "ms_per_photo_median": round(statistics.median(times), 2),
                "misread": wrong,
            }
        result["ms_per_photo_median"] = round(statistics.median(all_times), 2)
        big = _twelve_mp(work / f"seed{seeds[0]}", work / "12mp", min(n, 5 if quick else 50))
        big_times = [_read_one(predictor, image)[1] for image in big]
        result["ms_per_12mp_jpeg_median"] = round(statistics.median(big_times), 2)
        result["12mp_jpegs"] = len(big)
        seconds = _command_seconds(work / f"seed{seeds[0]}", path, threads, work)
        result["predict_command_ms_per_photo"] = round(1000 * seconds / n, 2)
    return result


def photos_lines(p: dict[str, Any]) -> list[str]:
    lines = [
        f"photos    seed {seed}: {row['right']}/{p['n']} right ({row['accuracy']:.1%}), median "
        f"{row['ms_per_photo_median']} ms per photo"
        for seed, row in p["seeds"].items()
    ]
    lines.append(
        f"photos    median {p['ms_per_photo_median']} ms per photo (read, decode, to_mnist, "
        f"model; {p['threads']} threads), {p['ms_per_12mp_jpeg_median']} ms per 12-MP JPEG; "
        f"predict command {p['predict_command_ms_per_photo']} ms per photo (start-up included)"
    )
    return lines
