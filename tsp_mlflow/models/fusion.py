"""Late-fusion modules: ``forward(feats, present) -> (B, out_dim)``, mask-aware."""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """Concatenate modality embeddings in a fixed order, zero-filling absent ones.

    Zero-fill is the thesis's rule for a missing modality. Multiplying by the mask (rather
    than indexing) keeps shapes static and gives a masked encoder exactly zero gradient.

    Args:
        in_dims: embedding size per modality, in the dataset's modality order.
    """

    def __init__(self, in_dims: dict[str, int]) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError("ConcatFusion needs at least one modality")
        self.in_dims = dict(in_dims)
        self.modalities = tuple(in_dims)
        self.out_dim = sum(in_dims.values())

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Fuse embeddings.

        Args:
            feats: modality -> (B, D_m). A modality absent from the dict counts as missing.
            present: (B, M) bool, columns in ``self.modalities`` order.

        Returns:
            (B, sum D_m).
        """
        if present.shape[1] != len(self.modalities):
            raise ValueError(
                f"present has {present.shape[1]} columns, expected {len(self.modalities)} "
                f"({', '.join(self.modalities)})"
            )
        batch = present.shape[0]
        parts = []
        for i, modality in enumerate(self.modalities):
            if modality in feats:
                mask = present[:, i : i + 1].to(feats[modality].dtype)  # (B, 1)
                parts.append(feats[modality] * mask)
            else:
                ref = next(iter(feats.values()))
                parts.append(ref.new_zeros(batch, self.in_dims[modality]))
        return torch.cat(parts, dim=1)  # (B, sum D_m)
