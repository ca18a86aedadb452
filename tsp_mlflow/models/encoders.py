"""Unimodal encoders. Each maps one modality's input to (B, out_dim) and exposes ``out_dim``.

Images and spectrograms arrive as (B, C, H, W), feature vectors as (B, D), sequences as
``{"values": (B, T, D), "lengths": (B,)}``; text encoders live in :mod:`.text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from tsp_mlflow.compat import ensure_torchvision
from tsp_mlflow.models.heads import MLPHead


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


class LeNetEncoder(nn.Module):
    """MultiBench's AVMNIST LeNet: a 5x5 conv, then ``layers`` 3x3 conv blocks that double
    the channels and halve the resolution, then a global max pool.

    MultiBench uses ``layers=3`` for 28x28 images and ``layers=5`` for 112x112
    spectrograms, with ``channels=6``; ``out_dim`` is ``channels * 2**layers``.

    Args:
        in_channels: input channels.
        channels: channels of the first conv.
        layers: number of conv + pool blocks after the first conv.
    """

    def __init__(self, in_channels: int = 1, channels: int = 6, layers: int = 3) -> None:
        super().__init__()
        if channels <= 0 or layers < 0:
            raise ValueError(f"channels must be positive and layers >= 0, got {channels}, {layers}")
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, kernel_size=5, padding=2, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        for i in range(layers):
            c_in, c_out = channels * 2**i, channels * 2 ** (i + 1)
            blocks += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        self.features = nn.Sequential(*blocks)
        self.out_dim = channels * 2**layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).amax(dim=(2, 3))  # (B, out_dim)


class MLPEncoder(nn.Module):
    """An MLP over a flattened input: provided feature vectors (word2vec, GloVe, BERT, VGG),
    or a whole image as in MultiBench's MLP baselines.

    Args:
        in_features: size of the flattened input (e.g. 300, 768, 4096, 784).
        hidden: widths of the hidden layers.
        out_dim: embedding size.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (512,),
        out_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        # The same Linear -> ReLU -> Dropout stack as the fusion head, on one modality.
        self.net = MLPHead(in_features, out_dim, hidden=hidden, dropout=dropout)
        self.in_features = in_features
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, in_features)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLPEncoder expects {self.in_features} input features, got {x.shape[1]}; "
                f"set in_features={x.shape[1]} in the encoder config"
            )
        return self.net(x)  # (B, out_dim)


def _sequence(x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, dict) or "values" not in x or "lengths" not in x:
        raise TypeError(
            "sequence encoders take {'values': (B, T, D), 'lengths': (B,)}; this modality's "
            "data is not a sequence, so pick another encoder for it"
        )
    values, lengths = x["values"], x["lengths"]
    return values, lengths.clamp(min=1, max=values.shape[1])  # an empty sequence reads one pad step


class GRUEncoder(nn.Module):
    """A GRU over a padded sequence that stops at each sample's length (packed sequences).

    Args:
        in_features: feature size per time step (e.g. 300 GloVe, 74 COVAREP, 35 FACET).
        hidden: GRU hidden size per direction.
        num_layers: stacked GRU layers.
        bidirectional: read both ways; the embedding concatenates both final states.
        out_dim: embedding size (a linear projection of the final hidden state).
        dropout: between GRU layers and before the projection.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 64,
        num_layers: int = 1,
        bidirectional: bool = True,
        out_dim: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.gru = nn.GRU(
            in_features,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden * (2 if bidirectional else 1), out_dim)
        self.out_dim = out_dim

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        values, lengths = _sequence(x)  # (B, T, D), (B,)
        packed = nn.utils.rnn.pack_padded_sequence(
            values, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)  # (layers * directions, B, hidden)
        directions = 2 if self.gru.bidirectional else 1
        last = h[-directions:].transpose(0, 1).reshape(values.shape[0], -1)  # (B, dirs*hidden)
        return self.project(self.dropout(last))  # (B, out_dim)


class TransformerSequenceEncoder(nn.Module):
    """A Transformer encoder over a padded sequence: padding is masked in attention and
    left out of the mean pool, so the output does not depend on how much padding there is.

    Args:
        in_features: feature size per time step.
        d_model: model width.
        nhead: attention heads.
        num_layers: encoder layers.
        dim_feedforward: feed-forward width.
        dropout: dropout inside the layers.
        max_len: longest sequence (learned positional embeddings).
        out_dim: embedding size.
    """

    def __init__(
        self,
        in_features: int,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
        max_len: int = 512,
        out_dim: int = 64,
    ) -> None:
        super().__init__()
        self.input = nn.Linear(in_features, d_model)
        self.position = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        # enable_nested_tensor=False: the fast path would return zeros at padded steps
        # instead of values, which is harmless here but differs between train and eval.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.project = nn.Linear(d_model, out_dim)
        self.max_len = max_len
        self.out_dim = out_dim

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        values, lengths = _sequence(x)  # (B, T, D), (B,)
        steps = values.shape[1]
        if steps > self.max_len:
            raise ValueError(
                f"sequence length {steps} exceeds max_len={self.max_len}; raise max_len"
            )
        positions = torch.arange(steps, device=values.device)
        pad = positions[None, :] >= lengths[:, None]  # (B, T), True at padding
        h = self.input(values) + self.position(positions)  # (B, T, d_model)
        h = self.encoder(h, src_key_padding_mask=pad)  # (B, T, d_model)
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1)  # (B, d_model)
        return self.project(pooled)  # (B, out_dim)


def _text_classes() -> tuple[type[nn.Module], ...]:
    from tsp_mlflow.models.text import BertTextEncoder, PretrainedTextEncoder

    return BertTextEncoder, PretrainedTextEncoder


# The only classes `load_encoder` will build from a downloaded config: a config fetched
# from a tracking server must never name an arbitrary callable.
ENCODER_CLASSES: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in (
        SmallCNN,
        ResNetEncoder,
        LeNetEncoder,
        MLPEncoder,
        GRUEncoder,
        TransformerSequenceEncoder,
        *_text_classes(),
    )
}
