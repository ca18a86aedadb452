"""Classification metrics, computed per modality pattern."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and macro-F1 for multiclass logits (N, C) against targets (N,)."""
    pred = logits.argmax(dim=1).cpu().numpy()
    y = target.cpu().numpy()
    return {
        "loss": float(F.cross_entropy(logits.float(), target)),
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, average="macro", zero_division=np.nan)),
    }
