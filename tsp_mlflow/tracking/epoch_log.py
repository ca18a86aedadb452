"""Per-epoch metrics to MLflow: one batched call per epoch, plus a ``metrics.json`` artifact.

Writes name their run explicitly (no fluent active run), so they may run on the
:class:`~tsp_mlflow.tracking.background.BackgroundWriter` thread.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.utils.time import get_current_time_millis

from tsp_mlflow.tracking import schema

# split -> pattern -> metric -> value; "train" has the single pseudo-pattern "all".
SplitMetrics = dict[str, dict[str, dict[str, float]]]


def flatten_metrics(metrics: SplitMetrics) -> dict[str, float]:
    """``{"val": {"audio": {"accuracy": .9}}}`` -> ``{"val/audio/accuracy": .9}``.

    Training metrics are not per pattern (training sees full data): ``train/<metric>``.
    """
    flat: dict[str, float] = {}
    for split, patterns in metrics.items():
        for pattern, values in patterns.items():
            for metric, value in values.items():
                key = (
                    f"train/{metric}"
                    if split == "train"
                    else schema.metric_key(split, pattern, metric)
                )
                flat[key] = value
    return flat


class EpochLogger:
    """Collects the thesis's ``epoch_metrics.json`` shape and mirrors it to MLflow.

    ``metrics.json`` is ``{"epochs": {"1": {split: {pattern: {metric: value}}}, ...},
    "test": {pattern: {metric: value}}, "best_epoch": int}``. It is rewritten with every
    checkpoint and at the end, so it always matches the newest checkpoint; the run's
    metrics themselves are logged every epoch.
    """

    def __init__(self, run_id: str, already_logged: Collection[int] = ()) -> None:
        self.run_id = run_id
        self.client = MlflowClient()
        self.document: dict[str, Any] = {"epochs": {}, "test": {}, "best_epoch": None}
        # A resumed run: epochs whose metrics the run holds already are never logged twice.
        self.logged = set(already_logged)

    def log_epoch(
        self, epoch: int, metrics: SplitMetrics, seconds: float, write_document: bool = True
    ) -> None:
        self._log_metrics(epoch, metrics, seconds)
        self.document["epochs"][str(epoch)] = metrics
        if write_document:
            self.write_document()

    def replay(self, history: Sequence[SplitMetrics], seconds: Sequence[float]) -> None:
        """Epochs 1..N from a checkpoint: log those the run lacks, rebuild ``metrics.json``."""
        for epoch, (metrics, s) in enumerate(zip(history, seconds, strict=True), start=1):
            self._log_metrics(epoch, metrics, s)
            self.document["epochs"][str(epoch)] = metrics
        if history:
            self.write_document()

    def _log_metrics(self, epoch: int, metrics: SplitMetrics, seconds: float) -> None:
        if epoch in self.logged:
            return
        self._log({**flatten_metrics(metrics), schema.TIME_EPOCH: seconds}, step=epoch)
        self.logged.add(epoch)

    def _log(self, values: dict[str, float], step: int) -> None:
        now = get_current_time_millis()
        batch = [Metric(key, float(value), now, step) for key, value in values.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def write_document(self) -> None:
        self.client.log_dict(self.run_id, self.document, schema.METRICS_ARTIFACT)

    def log_test(
        self, test: dict[str, dict[str, float]], best_epoch: int, skip: Collection[str] = ()
    ) -> None:
        """Test metrics at ``step=best_epoch``; keys in ``skip`` (logged by an earlier
        process of a resumed run) are not logged again."""
        flat = flatten_metrics({"test": test})
        self._log({k: v for k, v in flat.items() if k not in skip}, step=best_epoch)
        self.document["test"] = test
        self.document["best_epoch"] = best_epoch
        self.write_document()
