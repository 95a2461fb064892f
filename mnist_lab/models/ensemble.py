"""Several trained nets as one module: a distillation teacher (``module.teacher``)."""

from __future__ import annotations

import torch
from torch import nn


class EnsembleNet(nn.Module):
    """Several trained nets as one: the log of their mean probabilities (a distillation
    teacher, ``module.teacher``). Always in eval mode, never trained."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> EnsembleNet:
        return super().train(False)  # BatchNorm and dropout stay in inference mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([net(x).float().softmax(-1) for net in self.nets]).mean(0)
        return probs.clamp_min(1e-12).log()  # no -inf: KL against it stays finite
