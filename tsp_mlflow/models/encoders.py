"""Unimodal encoders. Each maps (B, C, H, W) to (B, out_dim) and exposes ``out_dim``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tsp_mlflow.compat import ensure_torchvision


class SmallCNN(nn.Module):
    """Three strided conv blocks and a global average pool: fast on CPU, any input size.

    Args:
        out_dim: embedding size.
        in_channels: input channels (1 for spectrograms and grey images).
        width: channels of the first block; doubled at each later block.
    """

    def __init__(self, out_dim: int = 64, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        if out_dim <= 0 or width <= 0:
            raise ValueError(f"out_dim and width must be positive, got {out_dim} and {width}")
        self.out_dim = out_dim
        blocks: list[nn.Module] = []
        channels = in_channels
        for i in range(3):
            out = width * 2**i
            blocks += [
                nn.Conv2d(channels, out, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*blocks)
        self.project = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 4*width, H/8, W/8)
        return self.project(x.mean(dim=(2, 3)))  # (B, out_dim)


class ResNetEncoder(nn.Module):
    """torchvision ResNet with a single-channel stem and a linear projection, as in the thesis.

    The thesis used ResNet18 for audio (out 64) and ResNet34 for images (out 128).
    Weights start random: nothing is downloaded.

    Args:
        depth: 18 or 34.
        out_dim: embedding size.
        in_channels: input channels.
    """

    def __init__(
        self, depth: Literal[18, 34] = 18, out_dim: int = 64, in_channels: int = 1
    ) -> None:
        super().__init__()
        ensure_torchvision()
        from torchvision.models import resnet18, resnet34

        builders = {18: resnet18, 34: resnet34}
        if depth not in builders:
            raise ValueError(f"ResNetEncoder depth must be 18 or 34, got {depth}")
        self.out_dim = out_dim
        net = builders[depth](weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Linear(net.fc.in_features, out_dim)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, out_dim)


# The only classes `load_encoder` will build from a downloaded config: a config fetched
# from a tracking server must never name an arbitrary callable.
ENCODER_CLASSES: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__qualname__}": cls for cls in (SmallCNN, ResNetEncoder)
}
