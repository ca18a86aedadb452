"""The figures every training run logs (``mlflow.log_figure``), shown in the run's
Artifacts tab: learning curves, the test metric per modality pattern, and one figure of
the full-pattern test predictions that fits the task."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import confusion_matrix, f1_score  # noqa: E402

from tsp_mlflow.tracking import schema  # noqa: E402
from tsp_mlflow.training.tasks import (  # noqa: E402
    MulticlassTask,
    MultilabelTask,
    SentimentRegressionTask,
    Task,
)

EpochMetrics = dict[str, dict[str, dict[str, float]]]


def learning_curves_figure(
    history: Sequence[EpochMetrics], monitor: str, best_epoch: int = 0
) -> plt.Figure:
    """Left: train loss and each pattern's val loss. Right: each pattern's val ``monitor``.
    A dotted line marks the best epoch (the weights the run kept)."""
    epochs = np.arange(1, len(history) + 1)
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    loss_ax.plot(
        epochs,
        [h["train"]["all"].get("loss", np.nan) for h in history],
        color="black",
        marker="o",
        markersize=3,
        label="train",
    )
    patterns = list(history[0].get("val", {})) if history else []
    for pattern in patterns:
        for ax, metric in ((loss_ax, "loss"), (metric_ax, monitor)):
            values = [h["val"][pattern].get(metric, np.nan) for h in history]
            ax.plot(epochs, values, marker="o", markersize=3, label=f"val {pattern}")
    for ax, name in ((loss_ax, "loss"), (metric_ax, monitor)):
        if best_epoch:
            ax.axvline(best_epoch, color="0.5", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    loss_ax.set_title("Loss per epoch")
    metric_ax.set_title(f"Validation {monitor} per modality pattern")
    return fig


def pattern_bars(test: dict[str, dict[str, float]], metric: str) -> plt.Figure:
    """The test ``metric`` of every modality pattern, one labelled bar each."""
    names = [p for p in test if metric in test[p]]
    values = [test[p][metric] for p in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 2), 4.2))
    bars = ax.bar(names, values, color=[f"C{i}" for i in range(len(names))])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"Test {metric} per modality pattern")
    ax.margins(y=0.15)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return fig


def confusion(logits: torch.Tensor, target: torch.Tensor, pattern: str) -> plt.Figure:
    """Row-normalised confusion matrix of the full-pattern test predictions, with counts."""
    classes = logits.shape[1]
    counts = confusion_matrix(target.numpy(), logits.argmax(1).numpy(), labels=range(classes))
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.55 * classes + 3, 0.55 * classes + 2.4))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(classes):
        for j in range(classes):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix, test, {pattern} (colour: share of the row)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def multilabel(
    logits: torch.Tensor,
    target: torch.Tensor,
    threshold: float,
    pattern: str,
    bins: int = 10,
    label_names: Sequence[str] = (),
) -> plt.Figure:
    """Left: reliability (mean predicted probability vs observed frequency per bin, over
    every label). Right: F1 per label (genre), with its number of positive test rows."""
    prob = torch.sigmoid(logits.float()).numpy().ravel()
    truth = target.numpy().ravel()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    fig, (rel_ax, f1_ax) = plt.subplots(1, 2, figsize=(12, 4.6))
    rel_ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", label="calibrated")
    rel_ax.plot(
        [prob[which == b].mean() for b in filled],
        [truth[which == b].mean() for b in filled],
        marker="o",
        label="model",
    )
    rel_ax.set_xlabel("mean predicted probability")
    rel_ax.set_ylabel("observed frequency")
    rel_ax.set_title(f"Reliability, test, {pattern}")
    rel_ax.legend(frameon=False)
    predicted = (torch.sigmoid(logits.float()) > threshold).numpy()  # as the task scores it
    per_label = f1_score(target.numpy(), predicted, average=None, zero_division=0)
    positives = target.numpy().sum(0).astype(int)
    bars = f1_ax.bar(range(len(per_label)), per_label)
    f1_ax.bar_label(bars, labels=[str(n) for n in positives], fontsize=7, padding=1)
    named = len(label_names) == len(per_label)
    if named:
        f1_ax.set_xticks(
            range(len(per_label)), labels=label_names, rotation=60, ha="right", fontsize=8
        )
    else:
        f1_ax.set_xticks(range(len(per_label)))
    f1_ax.set_xlabel(f"{'genre' if named else 'label'} (bar label: positive test rows)")
    f1_ax.set_ylabel("F1")
    f1_ax.set_ylim(0, 1.05)
    f1_ax.set_title(f"F1 per {'genre' if named else 'label'}")
    return fig


def regression(prediction: torch.Tensor, target: torch.Tensor, pattern: str) -> plt.Figure:
    """Predicted vs true sentiment, with the identity line."""
    pred, true = prediction.float().view(-1).numpy(), target.float().view(-1).numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, pred, s=8, alpha=0.5)
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="0.5")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"Predicted vs true, test, {pattern}")
    return fig


def log_run_figures(
    history: Sequence[EpochMetrics],
    test: dict[str, dict[str, float]] | None,
    outputs: tuple[torch.Tensor, torch.Tensor] | None,
    task: Task,
    full_pattern: str,
    best_epoch: int = 0,
    label_names: Sequence[str] = (),
) -> list[str]:
    """Log the run's figures to the active run; returns their artifact paths.

    ``outputs`` are the full pattern's test logits and targets (None with --skip-test);
    ``label_names`` name a multilabel task's labels (MM-IMDb's genres).
    """
    logged: list[tuple[plt.Figure, str]] = []
    try:
        _draw(logged, history, test, outputs, task, full_pattern, best_epoch, label_names)
        for fig, path in logged:
            fig.tight_layout()
            mlflow.log_figure(fig, path)
    finally:  # every figure drawn is closed, also when a later one fails
        for fig, _ in logged:
            plt.close(fig)
    return [path for _, path in logged]


def _draw(
    logged: list[tuple[plt.Figure, str]],
    history: Sequence[EpochMetrics],
    test: dict[str, dict[str, float]] | None,
    outputs: tuple[torch.Tensor, torch.Tensor] | None,
    task: Task,
    full_pattern: str,
    best_epoch: int,
    label_names: Sequence[str],
) -> None:
    metric = (getattr(task, "headline_metrics", None) or (task.monitor,))[0]
    if history:
        logged.append(
            (
                learning_curves_figure(history, task.monitor, best_epoch),
                schema.LEARNING_CURVES_FIGURE,
            )
        )
    if test:
        logged.append((pattern_bars(test, metric), schema.PATTERNS_FIGURE))
    if outputs is not None and len(outputs[1]):
        logits, target = outputs
        if isinstance(task, MultilabelTask):
            logged.append(
                (
                    multilabel(
                        logits, target, task.threshold, full_pattern, label_names=label_names
                    ),
                    schema.MULTILABEL_FIGURE,
                )
            )
        elif isinstance(task, SentimentRegressionTask):
            logged.append((regression(logits, target, full_pattern), schema.REGRESSION_FIGURE))
        elif isinstance(task, MulticlassTask):
            logged.append((confusion(logits, target, full_pattern), schema.CONFUSION_FIGURE))
