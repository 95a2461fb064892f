"""Plain ``nn.Module`` classifiers: input [N, 1, 28, 28] normalised pixels, output [N, 10] logits.

No Lightning here, so each net can be exported, scripted or reused on its own.
"""

from torch import nn

from mnist_lab.models.cnn import CNN
from mnist_lab.models.lenet import LeNet5
from mnist_lab.models.mlp import MLP
from mnist_lab.models.resnet import ResNet

__all__ = ["CNN", "MLP", "LeNet5", "ResNet", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, the number each config file states in its comment."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
