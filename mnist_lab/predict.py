"""Recognise your own handwriting: ``python -m mnist_lab.predict ckpt_path=PATH images=[...]``.

Photos and scans of any size, dark ink on light paper or the reverse, go through the same
MNIST-style preprocessing as the server and the draw-a-digit page
(``mnist_lab.serving.preprocess``).
``output=json`` prints one JSON object per image and nothing else on stdout (logs go to stderr).
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from mnist_lab.config import CONFIG_DIR  # importing config registers the resolvers
from mnist_lab.errors import ImageError, entry_point
from mnist_lab.evaluation.loading import load_predictor
from mnist_lab.serving.preprocess import image_paths, read_image, to_mnist

log = logging.getLogger(__name__)
OUTPUTS = ("text", "json")


def predict(cfg: DictConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Predictions for every readable image, and one error line per unreadable one."""
    if cfg.output not in OUTPUTS:
        raise ImageError(f"output={cfg.output} is not supported: use output=text or output=json")
    # A ListConfig converts to a list (the stubs give to_container one type for every node).
    images = (
        cast(list[str], OmegaConf.to_container(cfg.images))
        if OmegaConf.is_list(cfg.images)
        else cfg.images
    )
    predictor = load_predictor(cfg.ckpt_path, threads=cfg.threads)
    log.info("answering with %s", predictor.name)  # stderr: output=json keeps stdout pure
    results, errors, batch = [], [], []
    for path in image_paths(images):
        try:
            batch.append((path, to_mnist(read_image(path))))
        except ImageError as err:
            errors.append(str(err))
    if batch:
        probs = predictor.probabilities(np.stack([x for _, x in batch]))
        for (path, _), p in zip(batch, probs, strict=True):
            results.append(
                {
                    "path": str(path),
                    "digit": int(p.argmax()),
                    "probabilities": [round(float(v), 6) for v in p],
                }
            )
    return results, errors


def format_text(result: dict[str, Any]) -> str:
    probs = np.asarray(result["probabilities"])
    guesses = ", ".join(f"{d} ({probs[d]:.1%})" for d in np.argsort(-probs, kind="stable")[:3])
    return f"{result['path']}: {result['digit']}   top-3: {guesses}"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@entry_point
def main(cfg: DictConfig) -> None:
    results, errors = predict(cfg)
    for result in results:
        print(json.dumps(result) if cfg.output == "json" else format_text(result))
    if errors:  # every readable image was answered above; the exit status says some were not
        raise ImageError("\n".join(errors))


if __name__ == "__main__":
    main()
