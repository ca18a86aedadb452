"""Test-set bootstrap replicates of every pattern's headline metrics, for the analysis's variance
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


def bootstrap_test_metrics(
    task: Task, logits: dict[str, torch.Tensor], target: torch.Tensor, resamples: int
) -> dict[str, object]:
    """{"n": rows, "resamples": B, "seed": ..., "values": {pattern: {metric: [B values]}}}
    for ``logits`` (pattern -> (N, C) test outputs) and the (N, ...) ``target``: the task's
    headline metrics on each resample, computed for all resamples at once."""
    n = len(target)
    rng = np.random.default_rng([BOOTSTRAP_SEED, n])
    draws = rng.integers(0, n, size=(resamples, n))  # (B, N) row indices
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)  # (B, N) multiplicities
    values = {
        pattern: {
            m: [float(v) for v in column]
            for m, column in task.resampled(out, target, weights).items()
        }
        for pattern, out in logits.items()
    }
    return {"n": n, "resamples": resamples, "seed": BOOTSTRAP_SEED, "values": values}


def resample_rows(n: int, resamples: int) -> np.ndarray:
    """The (B, N) row indices every run of a test set of ``n`` rows resamples."""
    return np.random.default_rng([BOOTSTRAP_SEED, n]).integers(0, n, size=(resamples, n))
