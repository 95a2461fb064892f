"""Recurrent nets that read a digit as a sequence: 28 rows of 28 pixels (``rows``), 784 single
pixels in scan order (``pixels``: sequential MNIST, Le et al. 2015) or in one fixed random order
(``permuted_pixels``: psMNIST, the long-memory benchmark, where neighbouring steps are no longer
neighbouring pixels). torch's cuDNN/oneDNN-backed ``nn.LSTM``/``nn.GRU`` do the recurrence.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

SEQUENCES = ("rows", "pixels", "permuted_pixels")
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class RNN(nn.Module):
    """An LSTM or GRU (``cell``) of ``num_layers`` x ``hidden_size`` (both directions when
    ``bidirectional``) over the image as a sequence, and a linear head on the mean of its
    outputs over time (``readout=mean``: every step votes, gradients reach early steps directly)
    or on the final states (``last``: the classic sequential-MNIST readout).

    ``permutation_seed`` fixes psMNIST's pixel order; the order is a buffer, so it travels in
    the checkpoint and the exported graph.
    """

    # measured on a native-bf16 Xeon (2 threads, batch 128): a 2-layer bidirectional row LSTM
    # trains ~2x faster under bf16 autocast; there are no convolutions for channels_last
    cpu_bf16 = True
    has_convolutions = False
    order: torch.Tensor  # the pixel order (a buffer: saved, moved and exported with the net)

    def __init__(
        self,
        cell: Literal["lstm", "gru"] = "lstm",
        hidden_size: int = 128,
        num_layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.0,
        sequence: Literal["rows", "pixels", "permuted_pixels"] = "rows",
        readout: Literal["mean", "last"] = "mean",
        permutation_seed: int = 0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell={cell!r}: choose one of {', '.join(CELLS)}")
        if sequence not in SEQUENCES:
            raise ValueError(f"model.sequence={sequence!r}: choose one of {', '.join(SEQUENCES)}")
        if readout not in ("mean", "last"):
            raise ValueError(f"model.readout={readout!r}: choose mean or last")
        self.sequence, self.readout = sequence, readout
        order = torch.arange(784)
        if sequence == "permuted_pixels":
            order = torch.randperm(784, generator=torch.Generator().manual_seed(permutation_seed))
        self.register_buffer("order", order)
        self.rnn = CELLS[cell](
            input_size=28 if sequence == "rows" else 1,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * directions, num_classes)

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 28, 28] images -> [N, T, features] sequences."""
        if self.sequence == "rows":
            return x.reshape(x.shape[0], 28, 28)
        return x.reshape(x.shape[0], 784)[:, self.order].unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.steps(x))  # [N, T, H * directions]
        if self.readout == "mean":
            return self.head(out.mean(dim=1))
        hidden = self.rnn.hidden_size
        if self.rnn.bidirectional:  # forward direction's last step, backward direction's first
            return self.head(torch.cat([out[:, -1, :hidden], out[:, 0, hidden:]], dim=1))
        return self.head(out[:, -1])
