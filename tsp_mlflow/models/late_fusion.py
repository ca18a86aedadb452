"""The late-fusion classifier: named encoders -> mask-aware fusion -> head."""

from __future__ import annotations

import torch
from torch import nn

from tsp_mlflow.data.batch import ModalityInput


class LateFusionModel(nn.Module):
    """Encode each present modality, fuse, classify.

    A unimodal pretraining model is the same class with one encoder and a linear head,
    so pretraining and fusion training share one loop and one evaluator.

    Args:
        encoders: modality -> encoder, in the dataset's modality order.
        fusion: module with ``forward(feats, present)`` and ``out_dim``.
        head: maps the fused embedding to logits.
        unimodal_heads: modality -> head on that encoder's embedding alone, trained with
            unimodal auxiliary losses (``gradient=uniform|mmpareto``); never used to
            predict.
        predictor: completes missing embeddings before fusion
            (:class:`~tsp_mlflow.models.prediction.EmbeddingPredictor`,
            ``imputation=predicted``); None leaves them to the fusion's own rule.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        head: nn.Module,
        *,
        unimodal_heads: dict[str, nn.Module] | None = None,
        predictor: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.modalities = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.head = head
        # Absent (not empty) when unused, so the state dict of a plain model is unchanged.
        self.unimodal_heads = nn.ModuleDict(unimodal_heads) if unimodal_heads else None
        self.predictor = predictor
        self.frozen: set[str] = set()  # encoders that stay in eval mode (finetune=frozen)

    def train(self, mode: bool = True) -> LateFusionModel:
        super().train(mode)
        for m in self.frozen:
            self.encoders[m].eval()
        return self

    def encode(self, inputs: dict[str, ModalityInput]) -> dict[str, torch.Tensor]:
        """modality -> (B, D_m) for every modality given in ``inputs``."""
        return {m: self.encoders[m](inputs[m]) for m in self.modalities if m in inputs}

    def classify(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) from embeddings; ``present`` (B, M) decides which ones count (or,
        with a predictor, which ones are predicted from the others)."""
        if self.predictor is not None:
            feats, present = self.predictor.complete(feats, present)
        return self.head(self.fusion(feats, present))

    def unimodal_logits(
        self, feats: dict[str, torch.Tensor], present: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """modality -> (logits of its unimodal head, (B,) rows where it is present)."""
        if self.unimodal_heads is None:
            return {}
        return {
            m: (self.unimodal_heads[m](feats[m]), present[:, i])
            for i, m in enumerate(self.modalities)
            if m in feats
        }

    def forward(
        self, inputs: dict[str, ModalityInput], present: torch.Tensor, *, features: bool = False
    ) -> torch.Tensor | tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Logits (B, C); with ``features``, ``(embeddings, logits)``. The training loop
        calls this (not ``encode``/``classify``), so that a DDP wrapper sees the step."""
        feats = self.encode(inputs)
        logits = self.classify(feats, present)
        return (feats, logits) if features else logits
