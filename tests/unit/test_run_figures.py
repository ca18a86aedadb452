"""The figures every training run logs: one per task kind, drawn from the run's own
history and test outputs."""

from __future__ import annotations

import mlflow
import pytest
import torch
from matplotlib import pyplot as plt
from PIL import Image

from tsp_mlflow.tracking import schema
from tsp_mlflow.training.run_figures import log_run_figures, multilabel
from tsp_mlflow.training.tasks import MulticlassTask, MultilabelTask, SentimentRegressionTask

HISTORY = [
    {
        "train": {"all": {"loss": 2.0 - e / 10}},
        "val": {
            p: {
                "loss": 2.1 - e / 10,
                "accuracy": 0.3 + e / 10,
                "f1_micro": 0.2 + e / 10,
                "mae": 1.0 - e / 10,
            }
            for p in ("a-b", "a", "b")
        },
    }
    for e in range(3)
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "outputs", "figure"),
    [
        (
            MulticlassTask(num_classes=4),
            (torch.randn(30, 4), torch.arange(30) % 4),
            schema.CONFUSION_FIGURE,
        ),
        (
            MultilabelTask(num_labels=5),
            (torch.randn(30, 5), (torch.rand(30, 5) < 0.3).float()),
            schema.MULTILABEL_FIGURE,
        ),
        (
            SentimentRegressionTask(),
            (torch.randn(30, 1), torch.randn(30)),
            schema.REGRESSION_FIGURE,
        ),
    ],
)
def test_each_task_logs_its_three_figures_as_pngs(
    tracking_uri: str, task: object, outputs: tuple, figure: str
) -> None:
    test = {
        p: {m: 0.5 for m in ("accuracy", "f1_micro", "f1_macro", "mae", "acc2_non0")}
        for p in ("a-b", "a", "b")
    }
    before = plt.get_fignums()
    with mlflow.start_run() as run:
        paths = log_run_figures(HISTORY, test, outputs, task, "a-b", best_epoch=2)
    assert paths == [schema.LEARNING_CURVES_FIGURE, schema.PATTERNS_FIGURE, figure]
    assert plt.get_fignums() == before  # every figure closed
    for path in paths:
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=path)
        with Image.open(local) as image:
            assert image.format == "PNG" and min(image.size) >= 300


def test_skip_test_leaves_only_the_learning_curves(tracking_uri: str) -> None:
    with mlflow.start_run():
        paths = log_run_figures(HISTORY, None, None, MulticlassTask(num_classes=4), "a-b")
    assert paths == [schema.LEARNING_CURVES_FIGURE]


def test_multilabel_names_its_genres_when_the_dataset_does() -> None:
    genres = ("Drama", "Comedy", "Romance")
    target = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]).float()
    named = multilabel(target * 4 - 2, target, 0.5, "text-image", label_names=genres)
    assert [t.get_text() for t in named.axes[1].get_xticklabels()] == list(genres)
    assert named.axes[1].get_title() == "F1 per genre"
    plain = multilabel(target * 4 - 2, target, 0.5, "text-image", label_names=("x",))
    assert [t.get_text() for t in plain.axes[1].get_xticklabels()] == ["0", "1", "2"]
    plt.close("all")
