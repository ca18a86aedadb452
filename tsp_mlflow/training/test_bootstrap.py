"""Test-set bootstrap replicates of every pattern's metrics, for the analysis's variance
decomposition (seed variance is not all the variance: the test set is finite too).

Replicate b scores the run's own test predictions on resample b of the test rows. The
resamples depend only on the number of test rows and a fixed seed, so every run of a
dataset draws the same ones: replicate b of two runs pairs, and the spread of a mean
difference across replicates is the test set's share of its uncertainty (Bouthillier et
al., 2021). Logged as JSON (``test_bootstrap.json``), read without pickle.
"""

from __future__ import annotations

import numpy as np
import torch

from tsp_mlflow.training.tasks import Task

BOOTSTRAP_SEED = 20211210  # fixed: every run of a dataset resamples the same test rows


def test_bootstrap(
    task: Task, logits: dict[str, torch.Tensor], target: torch.Tensor, resamples: int
) -> dict[str, object]:
    """{"n": rows, "resamples": B, "seed": ..., "values": {pattern: {metric: [B values]}}}
    for ``logits`` (pattern -> (N, C) test outputs) and the (N, ...) ``target``."""
    n = len(target)
    rng = np.random.default_rng([BOOTSTRAP_SEED, n])
    draws = torch.as_tensor(rng.integers(0, n, size=(resamples, n)))  # (B, N)
    values: dict[str, dict[str, list[float]]] = {}
    for pattern, out in logits.items():
        per_metric: dict[str, list[float]] = {}
        for rows in draws:
            for metric, value in task.metrics(out[rows], target[rows]).items():
                per_metric.setdefault(metric, []).append(float(value))
        values[pattern] = per_metric
    return {"n": n, "resamples": resamples, "seed": BOOTSTRAP_SEED, "values": values}
