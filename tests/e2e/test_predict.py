"""Predict your own handwriting: MNIST-style preprocessing of photos, and the predict command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import render_photo, run_module, running_server


@pytest.fixture(scope="module")
def photos(datamodule, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """200 test digits rendered as photos in a folder; file name -> true label."""
    folder = tmp_path_factory.mktemp("photos")
    images, labels = datamodule.tensors["test"]
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(200):
        path = folder / f"{i:03d}.jpg"
        path.write_bytes(render_photo(images[i].numpy(), rng))
        truth[str(path)] = int(labels[i])
    return folder, truth


@pytest.mark.slow  # a trained model and the predict command
def test_predict_reads_simple_photos_at_97_percent(good_run, photos):
    """>= 97 % of 200 plain photos (even paper and light) right; `output=json` prints only JSON."""
    folder, truth = photos
    proc = run_module(
        "mnist_lab.predict",
        f"ckpt_path={good_run}",
        f"images=[{folder}]",
        "output=json",
        f"hydra.run.dir={folder.parent / 'predict_run'}",
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]  # fails on any non-JSON line
    assert len(rows) == 200
    assert all(len(r["probabilities"]) == 10 for r in rows)
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-3 for r in rows)
    correct = sum(r["digit"] == truth[r["path"]] for r in rows)
    assert correct >= 194, f"{correct}/200 photos right"


@pytest.mark.slow  # a trained model and the predict command
def test_rendered_phone_photos_are_read(good_run, tmp_path):
    """300 test digits rendered as phone photos by `python -m mnist_lab.photos` (shadows,
    gradients, inks, chalkboards, blur, JPEG; seed 0), read by `predict`. Measured on 1,000
    with the shipped model by `python -m mnist_lab.bench photos`: ~97.5 % (docs/robustness.md);
    the issue's 99 % is not reached, this floor guards what is."""
    folder = tmp_path / "photos"
    made = run_module("mnist_lab.photos", f"out={folder}", "n=300", "seed=0")
    assert "wrote 300 photos" in made.stdout
    truth = {
        str(folder / row["file"]): int(row["label"])
        for row in csv.DictReader((folder / "labels.csv").open())
    }
    assert len(truth) == 300 and len(set(truth.values())) == 10
    proc = run_module(
        "mnist_lab.predict",
        f"ckpt_path={good_run}",
        f"images=[{folder}]",
        "output=json",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    correct = sum(r["digit"] == truth[r["path"]] for r in rows)
    assert len(rows) == 300 and correct >= 285, f"{correct}/300 photos right"


def test_photo_generator_is_seeded_and_refuses_bad_arguments(datamodule, tmp_path):
    from mnist_lab.tools.photos import render_set

    images, labels = datamodule.tensors["test"]
    first = render_set(images, labels, 3, seed=5)
    assert first == render_set(images, labels, 3, seed=5)
    assert first != render_set(images, labels, 3, seed=6)
    bad = run_module("mnist_lab.photos", "out=x", "n=lots", check=False)
    assert bad.returncode == 2 and "n must be an integer" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow  # a trained model and the predict command
def test_predict_text_output_and_bad_files(good_run, photos, tmp_path):
    _, truth = photos
    first = sorted(truth)[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    proc = run_module(
        "mnist_lab.predict",
        f"ckpt_path={good_run}",
        f"images=[{first},{broken}]",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode == 1  # one image failed...
    line = proc.stdout.strip()
    assert line.startswith(f"{first}: {truth[first]}") and "top-3:" in line  # ...the other did not
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    missing = run_module(
        "mnist_lab.predict",
        f"ckpt_path={tmp_path / 'nope.ckpt'}",
        f"images=[{first}]",
        f"hydra.run.dir={tmp_path / 'run2'}",
        check=False,
    )
    assert missing.returncode == 1 and "nope.ckpt: no such file" in missing.stderr


def test_predict_and_serve_answer_with_the_shipped_model_without_a_ckpt_path(photos, tmp_path):
    """Right after `make install`: no training, no ckpt_path; the output says which model."""
    _, truth = photos
    paths = sorted(truth)[:20]
    proc = run_module(
        "mnist_lab.predict", f"images=[{','.join(paths)}]", "output=json",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [a["path"] for a in answers] == paths  # stdout: nothing but the JSON lines
    assert sum(a["digit"] == truth[a["path"]] for a in answers) >= 18
    assert "answering with digits.onnx (shipped: experiment=" in proc.stderr
    with running_server(None) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["model"].startswith("digits.onnx (shipped: experiment=")
        files = {"file": ("d.jpg", Path(paths[0]).read_bytes(), "image/jpeg")}
        r = httpx.post(f"{url}/predict", files=files)
        assert r.status_code == 200 and r.json()["digit"] == answers[0]["digit"], r.text
