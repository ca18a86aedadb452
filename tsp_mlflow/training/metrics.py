"""Classification metrics, computed per modality pattern."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and macro-F1 for multiclass logits (N, C) against targets (N,)."""
    return {
        "loss": float(F.cross_entropy(logits.float(), target)),
        **label_metrics(logits.argmax(dim=1), target),
    }


def label_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro-F1 of predicted labels (N,) against targets (N,)."""
    p, y = pred.cpu().numpy(), target.cpu().numpy()
    return {
        "accuracy": float(accuracy_score(y, p)),
        "f1_macro": float(f1_score(y, p, average="macro", zero_division=np.nan)),
    }
