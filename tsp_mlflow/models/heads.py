"""Classification heads on top of a fused embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPHead(nn.Module):
    """Linear -> ReLU -> Dropout blocks, then a linear output layer.

    The thesis's AVMNIST head is ``hidden=[128, 64]`` on the concatenated embeddings.

    Args:
        in_features: fused embedding size.
        out_features: number of classes.
        hidden: widths of the hidden layers (empty for a linear head).
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, out_features)
