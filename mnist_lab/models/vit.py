"""Vision Transformer for 28x28 digits: timm's ``VisionTransformer`` (fused
``scaled_dot_product_attention``, drop-path, class-token or mean pooling), with an optional
convolutional stem in front of the patch embedding (a hybrid ViT, Dosovitskiy et al. 2021 §3.1).

Why timm and not torchvision's ViT: timm's takes ``in_chans=1`` and ``img_size=28`` directly,
has drop-path and mean pooling, and trained 1.4x faster on a 2-core Xeon (``bench families``).
Why a stem: a few 3x3 convolutions give the patches the local stroke features a plain ViT has to
learn from 60,000 images, so large patches (few tokens: attention cost grows with their square)
still see fine detail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn


class ViT(nn.Module):
    """``stem_channels`` 3x3 conv-BN-GELU layers, each halving the side with stride 2 or, with
    ``stem_pool``, a 2x2 max-pool after a stride-1 conv (the CNN presets' pool-first order:
    more positions seen, small shifts absorbed; Hassani et al. 2021's compact convolutional
    transformer tokenises the same way) (none: a plain ViT), then
    ``patch_size`` x ``patch_size`` patches ((28 / patch_size)^2 tokens) of width ``embed_dim``,
    ``depth`` pre-norm Transformer blocks, and a linear head on the class token
    (``global_pool=token``) or on the mean of the patch tokens (``avg``)."""

    # bf16 autocast on a native-bf16 CPU: slower for this net (small matmuls, many casts and
    # LayerNorms; bench families: 0.72x float32's speed, 0.46x for a plain ViT), so `auto`
    # keeps float32 on CPUs
    cpu_bf16 = False

    def __init__(
        self,
        patch_size: int = 4,
        embed_dim: int = 128,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        global_pool: Literal["token", "avg"] = "token",
        stem_channels: Sequence[int] = (),
        stem_pool: bool = False,
        num_classes: int = 10,
    ) -> None:
        # imported here, not at the top: timm's import (its model registry, Hugging Face hub
        # client, W&B hooks) added 2.5-5.7 s to every command's start-up on a 2-core Xeon
        # (AVX-512 + bf16), ViT or not
        from timm.models.vision_transformer import VisionTransformer

        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = 1, 28
        for width in stem_channels:  # each halves the side: 28 -> 14 -> 7 -> 4 -> 2
            if stem_pool:  # conv at full size, 2x2 max-pool, BN + GELU on the pooled quarter
                halve = [
                    nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                    nn.MaxPool2d(2, ceil_mode=True),
                ]
            else:
                halve = [nn.Conv2d(c_in, width, 3, stride=2, padding=1, bias=False)]
            layers += [*halve, nn.BatchNorm2d(width), nn.GELU()]
            c_in, side = width, (side + 1) // 2
        if side % patch_size:
            raise ValueError(
                f"model.patch_size={patch_size} must divide the {side}x{side} grid the "
                f"{len(stem_channels)}-conv stem leaves (28 halved per conv)"
            )
        self.stem = nn.Sequential(*layers)
        self.vit = VisionTransformer(
            img_size=side,
            patch_size=patch_size,
            in_chans=c_in,
            num_classes=num_classes,
            global_pool=global_pool,
            class_token=global_pool == "token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(self.stem(x))

    def no_weight_decay(self) -> set[str]:
        """Position embedding and class token: weight decay would pull them to zero (timm's
        and DeiT's rule; the module's optimizer groups read it)."""
        return {f"vit.{name}" for name in self.vit.no_weight_decay()}
