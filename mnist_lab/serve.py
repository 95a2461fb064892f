"""Serve a model over HTTP: ``python -m mnist_lab.serve ckpt_path=PATH [host=...] [port=...]``.

``GET /`` is a draw-a-digit page, ``GET /health`` says which model is loaded, ``POST /predict``
takes an image upload or JSON pixels (:mod:`mnist_lab.serving.app`). ``ckpt_path`` may be a
checkpoint or an exported ``.onnx`` model; an ``.onnx`` model is served without torch.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from mnist_lab.config import CONFIG_DIR  # importing config registers the resolvers
from mnist_lab.errors import entry_point
from mnist_lab.evaluation.loading import load_predictor
from mnist_lab.serving.app import create_app

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
@entry_point
def main(cfg: DictConfig) -> None:
    import uvicorn

    predictor = load_predictor(cfg.ckpt_path, threads=cfg.threads)
    log.info("serving %s on http://%s:%d", predictor.name, cfg.host, cfg.port)
    uvicorn.run(
        create_app(predictor, cfg.max_batch),
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        access_log=cfg.access_log,
    )


if __name__ == "__main__":
    main()
