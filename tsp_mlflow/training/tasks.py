"""Tasks: what the head predicts, its loss, and the metrics computed per modality pattern.

A task is chosen per dataset in ``conf/task/`` (the data config picks its default) and is
the only place that knows about labels. Datasets hand over their natural target (a class
index, a multi-hot row, a sentiment score) and the task derives what it trains on, so
CMU-MOSI serves both the thesis's 3-class task and regression from the same files.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from tsp_mlflow.errors import UserInputError

F1_AVERAGES = ("macro", "micro", "weighted")


class Task:
    """Base class: subclasses set the class attributes and implement the three methods.

    Attributes:
        name: recorded as the ``tsp.task`` tag.
        target_kind: the dataset targets it reads (``data.target`` must match).
        metrics: every metric :meth:`metrics` returns, besides ``loss``.
        lower_is_better: metrics where smaller wins (``loss`` always does).
        headline_metrics: what the analysis compares by default.
    """

    name: ClassVar[str]
    target_kind: ClassVar[str]  # the dataset targets it reads: class | multilabel | sentiment
    metrics_names: ClassVar[tuple[str, ...]]
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    headline_metrics: ClassVar[tuple[str, ...]]

    def __init__(self, num_outputs: int, monitor: str) -> None:
        self.num_outputs = num_outputs
        choices = (*self.metrics_names, "loss")
        if monitor not in choices:
            raise UserInputError(
                f"task.monitor={monitor!r} is not a {self.name} metric; choose one of "
                f"{', '.join(choices)}"
            )
        self.monitor = monitor

    def higher_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    def target(self, target: torch.Tensor) -> torch.Tensor:
        """What the loss and metrics see, derived once per batch from the dataset's target."""
        return target

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """``loss`` and every metric in :attr:`metrics_names`, over a whole split.

        Args:
            logits: (N, num_outputs).
            target: (N,) or (N, num_outputs), already passed through :meth:`target`.
        """
        raise NotImplementedError

    def resampled(
        self, logits: torch.Tensor, target: torch.Tensor, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The headline metrics on B resamples of the rows at once: ``weights`` (B, N)
        counts how often each row is drawn. Equal to :meth:`metrics` on the resampled
        rows (tested); vectorised, because the test-set bootstrap scores 100 resamples
        of every pattern of every run."""
        raise NotImplementedError


class MulticlassTask(Task):
    """Softmax over ``num_classes``: accuracy and F1 (macro, micro, weighted).

    Args:
        num_classes: number of classes; dataset labels must lie in ``[0, num_classes)``.
        monitor: validation metric (full pattern) that picks the best epoch.
    """

    name = "multiclass"
    target_kind = "class"
    metrics_names = ("accuracy", "f1_macro", "f1_micro", "f1_weighted")
    headline_metrics = ("accuracy", "f1_macro")

    def __init__(self, num_classes: int, monitor: str = "accuracy") -> None:
        if num_classes < 2:
            raise UserInputError(f"num_classes must be at least 2, got {num_classes}")
        super().__init__(num_classes, monitor)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Equal to sklearn's ``accuracy_score`` and ``f1_score(average=...,
        zero_division=nan)`` (tested), from one per-class call instead of four: every
        epoch evaluates every modality pattern, and the four calls cost more than the
        forward pass of a small model's validation split (bench/pattern_eval.py)."""
        pred, y = logits.argmax(dim=1).cpu().numpy(), target.cpu().numpy()
        # Per class, over the labels in y or pred (sklearn's default label set).
        _, _, f1, support = precision_recall_fscore_support(y, pred, zero_division=np.nan)
        accuracy = float(np.mean(y == pred))
        return {
            "loss": float(self.loss(logits.float(), target)),
            "accuracy": accuracy,
            "f1_macro": _nan_average(f1),
            "f1_micro": accuracy,  # single-label, every class counted: micro F1 is accuracy
            "f1_weighted": _nan_average(f1, weights=support),
        }

    def resampled(
        self, logits: torch.Tensor, target: torch.Tensor, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        pred, y = logits.argmax(dim=1).cpu().numpy(), target.cpu().numpy()
        classes = max(int(logits.shape[1]), int(y.max(initial=0)) + 1)
        truth, guess = np.eye(classes)[y], np.eye(classes)[pred]  # (N, C) one-hot
        tp = weights @ (truth * guess)  # (B, C)
        seen = weights @ truth + weights @ guess  # 2tp + fp + fn, per class
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(seen > 0, 2 * tp / seen, np.nan)  # sklearn's labels: those seen
        return {
            "accuracy": tp.sum(axis=1) / weights.sum(axis=1),
            "f1_macro": np.nanmean(f1, axis=1),
        }


def _nan_average(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """sklearn's average of per-class scores under ``zero_division=nan``: undefined
    classes are left out; nothing defined gives NaN; all-zero weights fall back to equal."""
    defined = ~np.isnan(values)
    if not defined.any():
        return float("nan")
    w = None if weights is None else np.asarray(weights, float)[defined]
    if w is not None and w.sum() == 0:
        w = None
    return float(np.average(values[defined], weights=w))


class SentimentClassTask(MulticlassTask):
    """The thesis's CMU-MOSI task: 3 classes from the sentiment score's sign.

    negative (< 0) → 0, neutral (= 0) → 1, positive (> 0) → 2.
    """

    name = "sentiment3"
    target_kind = "sentiment"

    def __init__(self, monitor: str = "accuracy") -> None:
        super().__init__(3, monitor)

    def target(self, target: torch.Tensor) -> torch.Tensor:
        return (torch.sign(target.float()) + 1).long()  # (B,) in {0, 1, 2}


class MultilabelTask(Task):
    """Independent sigmoids (MM-IMDb genres): predicted where sigmoid > ``threshold``.

    F1 over samples, micro, macro and weighted, as the thesis reported for MM-IMDb.

    Args:
        num_labels: width of the multi-hot target.
        threshold: decision threshold on the sigmoid.
        monitor: validation metric that picks the best epoch.
    """

    name = "multilabel"
    target_kind = "multilabel"
    metrics_names = ("f1_samples", "f1_micro", "f1_macro", "f1_weighted")
    headline_metrics = ("f1_micro", "f1_macro")

    def __init__(self, num_labels: int, threshold: float = 0.5, monitor: str = "f1_micro") -> None:
        if not 0.0 < threshold < 1.0:
            raise UserInputError(f"task.threshold must be in (0, 1), got {threshold}")
        super().__init__(num_labels, monitor)
        self.threshold = threshold

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target.float())

    def resampled(
        self, logits: torch.Tensor, target: torch.Tensor, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        pred = (torch.sigmoid(logits.float()) > self.threshold).cpu().numpy().astype(float)
        y = target.cpu().numpy().astype(float)  # (N, L)
        tp = weights @ (y * pred)  # (B, L)
        seen = weights @ y + weights @ pred  # 2tp + fp + fn
        with np.errstate(divide="ignore", invalid="ignore"):
            per_label = np.where(seen > 0, 2 * tp / seen, 0.0)  # zero_division=0
            total = seen.sum(axis=1)
            micro = np.where(total > 0, 2 * tp.sum(axis=1) / total, 0.0)
        return {"f1_micro": micro, "f1_macro": per_label.mean(axis=1)}

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        pred = (torch.sigmoid(logits.float()) > self.threshold).cpu().numpy().astype(int)
        y = target.cpu().numpy().astype(int)
        return {
            "loss": float(self.loss(logits.float(), target)),
            **{
                f"f1_{avg}": float(f1_score(y, pred, average=avg, zero_division=0))
                for avg in ("samples", *F1_AVERAGES)
            },
        }


class SentimentRegressionTask(Task):
    """CMU-MOSI regression of the sentiment score in [-3, 3], with the standard metrics.

    MAE, Pearson r, binary accuracy and weighted F1 with zeros counted as non-negative
    (``*_has0``) and with zeros left out (``*_non0``), and 7-class accuracy after clipping
    to [-3, 3] and rounding (MMSA's definitions).

    Args:
        loss: ``l1`` (MMSA's default) or ``mse``.
        monitor: validation metric that picks the best epoch (``mae``: lower is better).
    """

    name = "sentiment_regression"
    target_kind = "sentiment"
    metrics_names = ("mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7")
    lower_is_better = frozenset({"loss", "mae"})
    headline_metrics = ("mae", "acc2_non0")

    def __init__(self, loss: str = "l1", monitor: str = "mae") -> None:
        if loss not in ("l1", "mse"):
            raise UserInputError(f"task.loss={loss!r} is unknown; choose l1 or mse")
        super().__init__(1, monitor)
        self.loss_name = loss

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = logits.squeeze(-1)  # (B,)
        fn = F.l1_loss if self.loss_name == "l1" else F.mse_loss
        return fn(pred, target.float())

    def resampled(
        self, logits: torch.Tensor, target: torch.Tensor, weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        pred = logits.float().squeeze(-1).cpu().numpy()
        y = target.float().cpu().numpy()
        non0 = (y != 0).astype(float)
        right = non0 * ((y > 0) == (pred > 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            acc2 = np.where(weights @ non0 > 0, (weights @ right) / (weights @ non0), np.nan)
        return {"mae": (weights @ np.abs(pred - y)) / weights.sum(axis=1), "acc2_non0": acc2}

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        pred = logits.float().squeeze(-1).cpu().numpy()
        y = target.float().cpu().numpy()
        non0 = y != 0
        defined = len(y) > 1 and np.std(pred) > 0 and np.std(y) > 0  # r needs spread in both
        corr = float(stats.pearsonr(pred, y)[0]) if defined else np.nan
        out = {
            "loss": float(self.loss(logits.float(), target)),
            "mae": float(np.mean(np.abs(pred - y))),
            "corr": corr,
            "acc2_has0": float(accuracy_score(y >= 0, pred >= 0)),
            "f1_has0": float(f1_score(y >= 0, pred >= 0, average="weighted", zero_division=0)),
            "acc7": float(
                accuracy_score(np.round(np.clip(y, -3, 3)), np.round(np.clip(pred, -3, 3)))
            ),
        }
        if non0.any():
            out["acc2_non0"] = float(accuracy_score(y[non0] > 0, pred[non0] > 0))
            out["f1_non0"] = float(
                f1_score(y[non0] > 0, pred[non0] > 0, average="weighted", zero_division=0)
            )
        else:
            out["acc2_non0"] = out["f1_non0"] = np.nan
        return out
