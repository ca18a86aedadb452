"""The contrastive "fusion": a per-modality projection into one shared, unit-norm space.

It takes the place of a fusion module, so the late-fusion model and its one training loop
train contrastive encoders unchanged; the loss, the temperature and the queue are the
task's (:class:`~tsp_mlflow.training.contrastive.ContrastiveObjective`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsp_mlflow.errors import UserInputError


class ContrastiveProjection(nn.Module):
    """Per-modality linear projection to ``dim``, L2-normalised, concatenated.

    Takes the place of a fusion module (same ``forward(feats, present)`` and ``out_dim``),
    so the late-fusion model and loop train contrastive encoders unchanged.

    Args:
        in_dims: embedding size per modality, in the dataset's modality order.
        dim: size of the shared embedding space.
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 64) -> None:
        super().__init__()
        if len(in_dims) < 2:
            raise UserInputError(
                f"contrastive pretraining pairs modalities and needs at least two, got "
                f"{list(in_dims)}; add a modality to data.modalities"
            )
        if dim < 1:
            raise UserInputError(f"contrastive projection dim must be at least 1, got {dim}")
        self.modalities = tuple(in_dims)
        self.project = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items()})
        self.dim = dim
        self.out_dim = dim * len(in_dims)

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(B, M * dim) unit-norm projections in modality order.

        Args:
            feats: modality -> (B, D_m); every modality must be given.
            present: (B, M) bool; accepted for the fusion interface, must be all true.

        Raises:
            ValueError: a modality is missing from ``feats`` or masked in a row.
        """
        absent = [m for m in self.modalities if m not in feats]
        if present.shape != (present.shape[0], len(self.modalities)):
            raise ValueError(
                f"present has shape {tuple(present.shape)}, expected (B, {len(self.modalities)}) "
                f"for {', '.join(self.modalities)}"
            )
        masked = [m for i, m in enumerate(self.modalities) if not bool(present[:, i].all())]
        if absent or masked:
            raise ValueError(
                f"contrastive pretraining needs paired samples, but modalities "
                f"{sorted(set(absent + masked))} are missing in some rows; train on complete "
                "data (no missing-modality simulation) and evaluate the full pattern only"
            )
        parts = [F.normalize(self.project[m](feats[m]), dim=1) for m in self.modalities]
        return torch.cat(parts, dim=1)  # (B, M * dim)
