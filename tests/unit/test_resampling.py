"""The test-set bootstrap: vectorised resampled metrics equal each task's own metrics on
the resampled rows, and every run of a test set draws the same resamples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsp_mlflow.training.resampling import bootstrap_test_metrics, resample_rows
from tsp_mlflow.training.tasks import (
    MulticlassTask,
    MultilabelTask,
    SentimentClassTask,
    SentimentRegressionTask,
)


def outputs(task: object, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(task, MultilabelTask):
        return torch.randn(n, 5), torch.from_numpy(rng.integers(0, 2, (n, 5))).float()
    if isinstance(task, SentimentRegressionTask):
        y = torch.from_numpy(rng.choice([-2.0, -0.5, 0.0, 0.5, 1.5, 3.0], n)).float()
        return torch.randn(n, 1), y
    classes = 3 if isinstance(task, SentimentClassTask) else 6
    return torch.randn(n, classes), torch.from_numpy(rng.integers(0, classes, n))


@pytest.mark.parametrize(
    "task",
    [MulticlassTask(6), SentimentClassTask(), MultilabelTask(5), SentimentRegressionTask()],
    ids=lambda t: t.name,
)
def test_resampled_metrics_equal_the_tasks_own_metrics(task: object) -> None:
    rng = np.random.default_rng(0)
    n = 40  # small: some resamples miss a class or a label entirely
    logits, target = outputs(task, n, rng)
    found = bootstrap_test_metrics(task, {"audio-image": logits}, target, resamples=25)
    rows = resample_rows(n, 25)
    assert found["n"] == n and found["resamples"] == 25
    for b, picked in enumerate(rows):
        expected = task.metrics(logits[picked], target[picked])
        for metric, values in found["values"]["audio-image"].items():
            assert values[b] == pytest.approx(expected[metric], nan_ok=True), (metric, b)
    assert set(found["values"]["audio-image"]) == set(task.headline_metrics)


def test_every_run_of_a_test_set_draws_the_same_resamples() -> None:
    assert np.array_equal(resample_rows(360, 10), resample_rows(360, 10))
    assert not np.array_equal(resample_rows(360, 10), resample_rows(361, 10)[:, :360])
