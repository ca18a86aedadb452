"""Task metrics agree with scikit-learn's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from tsp_mlflow.training.tasks import MulticlassTask


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_multiclass_metrics_equal_sklearn_including_absent_classes(seed: int) -> None:
    """Random sizes and class subsets: classes only predicted, only true, or absent."""
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 12))
    n = int(rng.integers(1, 60))
    true_pool = rng.choice(classes, size=int(rng.integers(1, classes + 1)), replace=False)
    pred_pool = rng.choice(classes, size=int(rng.integers(1, classes + 1)), replace=False)
    y = rng.choice(true_pool, size=n)
    pred = rng.choice(pred_pool, size=n) if seed % 3 else y.copy()  # some perfect runs
    logits = torch.full((n, classes), -5.0)
    logits[torch.arange(n), torch.from_numpy(pred)] = 5.0

    got = MulticlassTask(classes).metrics(logits, torch.from_numpy(y))

    assert _same(got["accuracy"], float(accuracy_score(y, pred)))
    for average in ("macro", "micro", "weighted"):
        want = float(f1_score(y, pred, average=average, zero_division=np.nan))
        assert _same(got[f"f1_{average}"], want), (average, got[f"f1_{average}"], want)
