from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

MAX_POOL_2 = partial(nn.MaxPool2d, 2)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998): conv5-pool-conv5-pool-120-84-10 on 28x28 padded to 32x32.

    ``activation`` and ``pool`` are factories so the config can pick the 1998 original
    (Tanh + AvgPool2d) or the modern variant (ReLU + MaxPool2d, trains faster).
    """

    def __init__(
        self,
        activation: Callable[[], nn.Module] = nn.ReLU,
        pool: Callable[[], nn.Module] = MAX_POOL_2,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),  # the paper's 32x32 input == 28x28 padded by 2
            activation(),
            pool(),
            nn.Conv2d(6, 16, 5),
            activation(),
            pool(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            activation(),
            nn.Linear(120, 84),
            activation(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
