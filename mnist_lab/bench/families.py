"""``bench families``: training images/s of each model family in float32 and bf16 autocast, the
measurement behind what ``auto`` knows per family (``cpu_bf16``, ``has_convolutions`` on each
net class), and the ViT choices: timm vs torchvision at the same shape, plain patches vs the
convolutional stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from mnist_lab.bench.machine import train_images_per_s
from mnist_lab.config import compose_train_config
from mnist_lab.training.hardware import net_traits, resolve_channels_last, resolve_precision

# name -> Hydra overrides of a preset; each row is trained on synthetic batches (compute only)
ROWS: dict[str, list[str]] = {
    "fast (CNN)": ["experiment=fast"],
    "mlp": ["experiment=mlp"],
    "vit (conv stem, 16 tokens)": ["experiment=vit"],
    "vit, plain, 7x7 patches (16 tokens)": [
        "experiment=vit", "model.stem_channels=[]", "model.patch_size=7",
    ],
    "vit, plain, 4x4 patches (49 tokens)": [
        "experiment=vit", "model.stem_channels=[]", "model.patch_size=4",
    ],
    "torchvision ViT, plain, 7x7 patches": [
        "experiment=vit", "model._target_=mnist_lab.bench.families.torchvision_vit",
        "model.stem_channels=[]", "model.patch_size=7",
    ],
    "rnn (rows, 2x bi-LSTM-128)": ["experiment=rnn"],
    "smnist (784 pixels, LSTM-128)": ["experiment=smnist"],
}  # fmt: skip


def torchvision_vit(
    patch_size: int = 7,
    embed_dim: int = 128,
    depth: int = 4,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    **_: Any,
) -> nn.Module:
    """torchvision's VisionTransformer at the shape of ``model=vit``'s plain variant, its
    3-channel patch projection swapped for a 1-channel one (torchvision has no ``in_chans``)."""
    from torchvision.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        image_size=28,
        patch_size=patch_size,
        num_layers=depth,
        num_heads=num_heads,
        hidden_dim=embed_dim,
        mlp_dim=int(embed_dim * mlp_ratio),
        num_classes=10,
    )
    net.conv_proj = nn.Conv2d(1, embed_dim, patch_size, patch_size)
    return net


def bench_families(quick: bool, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per row: images/s in float32 and bf16-mixed (layout as ``auto`` picks it for the
    family), their ratio, and the precision ``auto`` resolves to on this machine."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = "gpu" if device == "cuda" else "cpu"
    table = {}
    # --quick leaves out the 784-step LSTM: in float32 its 3 timed steps alone take ~25 s
    for name in names or [n for n in ROWS if not (quick and n.startswith("smnist"))]:
        cfg = compose_train_config(ROWS[name])
        bf16_pays, convs = net_traits(cfg.model)
        auto = resolve_precision("auto", accelerator, bf16_pays)
        layout = resolve_channels_last("auto", auto, accelerator, convs)
        rates = {
            p: round(train_images_per_s(cfg, p, layout, quick, device)[0])
            for p in ("32", "bf16-mixed")
        }
        table[name] = {
            "overrides": ROWS[name],
            "model": OmegaConf.to_container(cfg.model),
            "batch_size": int(cfg.data.batch_size),
            "channels_last": layout,
            "images_per_s": rates,
            "bf16_vs_fp32": round(rates["bf16-mixed"] / rates["32"], 3),
            "auto": auto,
        }
    return table
