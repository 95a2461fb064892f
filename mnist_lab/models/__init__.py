"""Plain ``nn.Module`` classifiers: input [N, 1, 28, 28] normalised pixels, output [N, 10] logits.

No Lightning here, so each net can be exported, scripted or reused on its own.
"""

from typing import Any

import torch
from torch import nn

from mnist_lab.models.cnn import CNN
from mnist_lab.models.lenet import LeNet5
from mnist_lab.models.mlp import MLP
from mnist_lab.models.resnet import ResNet
from mnist_lab.models.rnn import RNN
from mnist_lab.models.vit import ViT

__all__ = ["CNN", "MLP", "RNN", "LeNet5", "ResNet", "ViT", "count_parameters", "multiply_adds"]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, the number each config file states in its comment."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _recurrent_multiply_adds(rnn: nn.RNNBase, steps: int) -> int:
    """An LSTM/GRU layer stack's matrix products over ``steps``: per step, layer and direction,
    gates x (inputs x hidden + hidden x hidden) (4 gates for an LSTM, 3 for a GRU)."""
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    directions = 2 if rnn.bidirectional else 1
    h, total = rnn.hidden_size, 0
    for layer in range(rnn.num_layers):
        inputs = rnn.input_size if layer == 0 else h * directions
        total += directions * gates * (inputs * h + h * h) * steps
    return total


def multiply_adds(net: nn.Module) -> int:
    """Multiply-adds of one image's forward pass, the zoo table's cost column: torch's
    FlopCounterMode (convolutions, matmuls, the CPU's fused attention) plus the recurrences
    that nn.LSTM/nn.GRU run as one fused op the counter cannot look into."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(
        query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
    ) -> int:
        return sdpa_flop_count(query, key, value)

    recurrent = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
        nonlocal recurrent
        assert isinstance(module, nn.RNNBase)
        recurrent += _recurrent_multiply_adds(
            module, inputs[0].shape[1 if module.batch_first else 0]
        )

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.RNNBase)]
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
    was_training = net.training
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
            net.eval()(torch.zeros(1, 1, 28, 28))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    return counter.get_total_flops() // 2 + recurrent
