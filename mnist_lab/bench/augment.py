"""``bench augment``: ms per batch of the robust augmentation, per stage, vs kornia's."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf

from mnist_lab.bench.timing import ms_per_call
from mnist_lab.config import CONFIG_DIR
from mnist_lab.data.augment import Augment
from mnist_lab.data.datamodule import make_augment
from mnist_lab.data.files import load_split, to_unit


def bench_augment(quick: bool, batch_size: int = 96) -> dict[str, Any]:
    """ms per training batch of the robust augmentation (conf/data/augment/robust.yaml), per
    stage and in all, against kornia's nearest equivalents when kornia is installed
    (``pip install kornia``; not a dependency)."""
    path = Path(CONFIG_DIR) / "data/augment/robust.yaml"
    options = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(path)))  # a mapping
    robust = make_augment(options)
    repeats = 10 if quick else 100
    x = to_unit(load_split("train")[0][:batch_size])
    half = x[: round(robust.degrade_p * batch_size)]  # the share the photometric stages get
    g = torch.Generator().manual_seed(0)
    shape_keys = ("rotate_deg", "translate_frac", "scale", "shear_deg", "elastic_px")
    geometry = Augment(**{k: options[k] for k in shape_keys})
    ours = {"geometry (affine + elastic)": ms_per_call(lambda: geometry(x, g), repeats)}
    every = torch.ones(len(half), 1, 1, 1)  # each stage timed on the whole degraded share
    for _, stage in robust._stages():
        ours[stage.__name__.strip("_")] = ms_per_call(partial(stage, half, g, every), repeats)
    ours["all (robust.yaml)"] = ms_per_call(lambda: robust(x, g), repeats)
    result: dict[str, Any] = {"batch_size": batch_size, "ours_ms": ours}
    try:
        import kornia
        import kornia.augmentation as K
    except ImportError:
        result["kornia_ms"] = None
        return result
    k_geometry = K.RandomAffine(
        degrees=options["rotate_deg"],
        translate=(options["translate_frac"],) * 2,
        scale=tuple(options["scale"]),
        shear=options["shear_deg"],
        p=1.0,
    )
    k_elastic = K.RandomElasticTransform(p=1.0)
    blur = K.RandomGaussianBlur((7, 7), (0.3, 1.5), p=1.0)
    light = K.AugmentationSequential(
        K.RandomContrast((0.25, 1.0), p=1.0), K.RandomBrightness((1.0, 1.5), p=1.0)
    )
    noise = K.AugmentationSequential(
        K.RandomGaussianNoise(std=0.3, p=1.0), K.RandomSaltAndPepperNoise(amount=0.15, p=1.0)
    )
    erase = K.RandomErasing((0.02, 0.15), p=1.0)
    kernel = torch.ones(3, 3)
    theirs = {
        "geometry (affine + elastic)": ms_per_call(lambda: k_elastic(k_geometry(x)), repeats),
        "stroke": ms_per_call(lambda: kornia.morphology.dilation(half, kernel), repeats),
        "blur": ms_per_call(lambda: blur(half), repeats),
        "light": ms_per_call(lambda: light(half), repeats),
        "noise": ms_per_call(lambda: noise(half), repeats),
        "erase": ms_per_call(lambda: erase(half), repeats),
    }
    result["kornia_ms"] = theirs
    result["kornia_version"] = kornia.__version__
    return result
