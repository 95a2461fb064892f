from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DomainBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with a second set of statistics and affine for the degraded images (AdvProp's
    auxiliary BN, Xie et al. 2020): in training the batch's first half (the degraded twins of
    ``data.augment.twins``, or the degraded share ``degrade_p=0.5``) goes through ``aux``, the
    rest through this one; evaluation, export and serving use this one only."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.aux = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        degraded, clean = x.chunk(2)
        return torch.cat([self.aux(degraded), super().forward(clean)])


def conv_bn_relu(c_in: int, c_out: int, domain_bn: bool = False) -> nn.Sequential:
    """3x3 conv without bias (BatchNorm's shift replaces it), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        DomainBatchNorm2d(c_out) if domain_bn else nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CNN(nn.Module):
    """VGG-style stages of ``convs_per_stage`` conv-BN-ReLU blocks, each stage ending in a 2x2
    max-pool (28 -> 14 -> 7 -> 3) and dropout; then a linear head on the globally average-pooled
    features (``global_pool``) or on the whole flattened last map, which keeps where strokes are.
    ``width_multiplier`` scales every stage's width: one number for a hyper-parameter search.
    ``pool_first`` max-pools right after each stage's first conv, before its BatchNorm and ReLU
    (airbench's order): BatchNorm and ReLU, memory-bound on a CPU, then touch a quarter of the
    pixels; at 28x28 they cost more than the convolution itself.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 2,
        dropout: float = 0.1,
        global_pool: bool = True,
        num_classes: int = 10,
        width_multiplier: float = 1.0,
        pool_first: bool = False,
        domain_bn: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for width in (max(1, round(w * width_multiplier)) for w in widths):
            stage = [
                conv_bn_relu(c_in if i == 0 else width, width, domain_bn)
                for i in range(convs_per_stage)
            ]
            if pool_first:  # conv -> pool -> BN -> ReLU -> (more convs)
                stage[0].insert(1, nn.MaxPool2d(2))
                layers += [*stage, nn.Dropout(dropout)]
            else:
                layers += [*stage, nn.MaxPool2d(2), nn.Dropout(dropout)]
            c_in = width
        self.features = nn.Sequential(*layers)
        side = 28 >> len(widths)  # each stage's 2x2 max-pool halves (floors) the side
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity(),
            nn.Flatten(),
            nn.Linear(c_in if global_pool else c_in * side * side, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
