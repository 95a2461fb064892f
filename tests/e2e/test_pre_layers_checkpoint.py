"""A checkpoint and an ONNX file made by the code before the layers move (issue 27; the commit
is in tests/fixtures/pre_layers/card.json, made by make.py there) still load in every command
and predict the same digits."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mnist_lab.data.files import load_split
from mnist_lab.evaluation.loading import load_predictor
from tests.helpers import run_module, running_server

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pre_layers"
CARD = json.loads((FIXTURE / "card.json").read_text())
CKPT, ONNX = FIXTURE / "lenet.ckpt", FIXTURE / "lenet.onnx"


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_split("test")
    return images.numpy(), labels.numpy()


def _digits(probabilities: np.ndarray) -> str:
    return "".join(str(d) for d in probabilities.argmax(-1)[: len(CARD["digits"])])


def test_the_fixture_is_small_and_from_before_the_move():
    assert CKPT.stat().st_size + ONNX.stat().st_size < 1_000_000
    assert len(CARD["commit"]) == 40 and len(CARD["digits"]) == 500


@pytest.mark.parametrize("model", [CKPT, ONNX], ids=["checkpoint", "onnx"])
def test_old_files_predict_the_same_digits(model, test_set):
    images, labels = test_set
    probs = load_predictor(model).probabilities(images)
    assert _digits(probs) == CARD["digits"]
    assert float((probs.argmax(-1) == labels).mean()) == pytest.approx(CARD["test_acc"], abs=1e-4)


@pytest.mark.slow  # the commands, in real processes
def test_old_checkpoint_in_eval_ensemble_export_predict_and_serve(tmp_path, test_set):
    images, _ = test_set
    run = [f"hydra.run.dir={tmp_path / 'command'}"]
    run_module("mnist_lab.eval", f"ckpt_path={CKPT}", f"out_dir={tmp_path / 'eval'}", *run)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # eval tests through the Trainer, in bf16 where the CPU has it natively: a few digits may flip
    assert evaluated["test/acc"] == pytest.approx(CARD["test_acc"], abs=1e-3)
    ensemble = run_module("mnist_lab.ensemble", f"ckpts=[{CKPT},{CKPT}]", "tta=false", *run)
    (acc,) = re.findall(r"ensemble of 2 test/acc: ([0-9.]+)", ensemble.stdout)
    assert float(acc) == pytest.approx(CARD["test_acc"], abs=1e-4)  # twice the same model
    run_module("mnist_lab.export", f"ckpt_path={CKPT}", f"out={tmp_path / 'again.onnx'}", *run)
    report = json.loads((tmp_path / "again.onnx.json").read_text())
    assert report["argmax_agree"] == 10_000
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    (tmp_path / "digit.png").write_bytes(png.getvalue())
    for model in (CKPT, ONNX):
        said = run_module(
            "mnist_lab.predict", f"ckpt_path={model}", f"images=[{tmp_path / 'digit.png'}]",
            "output=json", *run,
        ).stdout  # fmt: skip
        assert json.loads(said)["digit"] == int(CARD["digits"][0])
    with running_server(str(CKPT), f"hydra.run.dir={tmp_path / 'serve'}") as url:
        answer = httpx.post(f"{url}/predict", files={"file": png.getvalue()}).json()
    assert answer["digit"] == int(CARD["digits"][0])
