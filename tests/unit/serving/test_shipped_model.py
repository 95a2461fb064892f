"""The model that ships in mnist_lab/serving/model/: it scores its card's test accuracy with
today's code (so it can never drift silently), it is small, and it says what it is."""

from __future__ import annotations

import json

import numpy as np

from mnist_lab.data.files import load_split
from mnist_lab.paths import SHIPPED_MODEL
from mnist_lab.serving.predictor import OnnxPredictor, model_card


def test_the_shipped_model_scores_its_cards_test_accuracy():
    card = model_card(SHIPPED_MODEL)
    assert card == json.loads(SHIPPED_MODEL.with_name("digits.onnx.json").read_text())
    images, labels = load_split("test")
    predictor = OnnxPredictor(SHIPPED_MODEL, threads=2)
    probs = np.concatenate(
        [predictor.probabilities(images[i : i + 2000].numpy()) for i in range(0, 10_000, 2000)]
    )
    accuracy = float((probs.argmax(1) == labels.numpy()).mean())
    assert abs(accuracy - card["test/acc"]) <= 1e-4, (accuracy, card["test/acc"])
    assert card["argmax_agree"] == card["n_images"] == 10_000  # parity with PyTorch, at export


def test_the_shipped_model_is_small_and_says_what_it_is():
    card = model_card(SHIPPED_MODEL)
    assert SHIPPED_MODEL.stat().st_size == card["size_bytes"] < 2 * 2**20
    for key in ("recipe", "seed", "commit", "machine", "clean_acc", "suite_mean_acc", "rebuild"):
        assert card.get(key) is not None, key
    name = OnnxPredictor(SHIPPED_MODEL).name
    assert name.startswith("digits.onnx (shipped: ") and card["recipe"] in name
