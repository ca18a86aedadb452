"""Per-epoch metrics to MLflow, batched with each checkpoint, plus a ``metrics.json`` artifact.

Writes name their run explicitly (no fluent active run), so they may run on the
:class:`~tsp_mlflow.tracking.background.BackgroundWriter` thread.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.session import deferred_interrupts

# MLflow's limit per log_batch request (its client splits bigger batches anywhere).
MAX_METRICS_PER_CALL = MAX_METRICS_PER_BATCH

# A checkpoint's record of the monitoring samples not yet known to be sent (state.json).
MONITOR_SAMPLES = "monitor_samples"

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
    checkpoint and at the end, so it always matches the newest checkpoint.

    Epoch metrics are queued and sent in one batched call (each epoch with its own step
    and time) with every checkpoint, so the run's history never runs ahead of its newest
    checkpoint, and a resume (which continues from that checkpoint) logs each epoch once.
    A 1-second epoch would otherwise pay a server round trip each. Without checkpoints,
    every epoch is sent as it ends.
    """

    def __init__(self, run_id: str, already_logged: Collection[int] = ()) -> None:
        self.run_id = run_id
        self.client = MlflowClient()
        self.document: dict[str, Any] = {"epochs": {}, "test": {}, "best_epoch": None}
        # A resumed run: epochs whose metrics the run holds already are never logged twice.
        self.logged = set(already_logged)
        self._pending: list[list[Metric]] = []  # one list per queued epoch
        self._samples: list[Metric] = []  # monitoring samples, sent after their epochs

    def log_epoch(
        self,
        epoch: int,
        metrics: SplitMetrics,
        seconds: float,
        send: bool = True,
        extra: Sequence[Metric] = (),
    ) -> None:
        """Queue the epoch's metrics; with ``send`` (a checkpoint holds this epoch now, or
        there are none), send the queue and rewrite ``metrics.json``. ``extra`` metrics
        (monitoring samples, with their own steps) travel with the epoch's."""
        self._log_metrics(epoch, metrics, seconds, extra)
        self.document["epochs"][str(epoch)] = metrics
        if send:
            self.flush()
            self.write_document()

    def replay(self, history: Sequence[SplitMetrics], seconds: Sequence[float]) -> None:
        """Epochs 1..N from a checkpoint: log those the run lacks, rebuild ``metrics.json``."""
        for epoch, (metrics, s) in enumerate(zip(history, seconds, strict=True), start=1):
            self._log_metrics(epoch, metrics, s)
            self.document["epochs"][str(epoch)] = metrics
        self.flush()
        if history:
            self.write_document()

    def flush(self) -> None:
        """Send every queued epoch, in calls of whole epochs.

        MLflow sends at most 1,000 metrics per request; splitting inside an epoch could leave
        it half logged, which a resume would log again. An epoch leaves the queue only once
        sent, and SIGINT/SIGTERM wait for the call (on the main thread)."""
        with deferred_interrupts():
            while self._pending:
                count = size = 0
                for epoch in self._pending:  # whole epochs up to the limit (at least one)
                    if count and size + len(epoch) > MAX_METRICS_PER_CALL:
                        break
                    count, size = count + 1, size + len(epoch)
                batch = [m for epoch in self._pending[:count] for m in epoch]
                if batch:
                    self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
                del self._pending[:count]
            # Monitoring samples go after the epochs they belong to, in their own calls
            # (MLflow splits them past 1,000), so an epoch's own metrics stay one request.
            if self._samples:
                self.client.log_batch(self.run_id, metrics=self._samples, synchronous=True)
                self._samples = []

    def _log_metrics(
        self, epoch: int, metrics: SplitMetrics, seconds: float, extra: Sequence[Metric] = ()
    ) -> None:
        if epoch in self.logged:
            return
        now = get_current_time_millis()
        values = {**flatten_metrics(metrics), schema.TIME_EPOCH: seconds}
        self._pending.append([Metric(key, float(v), now, epoch) for key, v in values.items()])
        self._samples.extend(extra)
        self.logged.add(epoch)

    def send_missing_samples(self, samples: Sequence[Metric]) -> None:
        """Send the samples whose (key, step) the run lacks: each sample once, however a
        kill fell between a checkpoint's upload and the samples' request."""
        if not samples:
            return
        have = {
            key: {m.step for m in self.client.get_metric_history(self.run_id, key)}
            for key in {m.key for m in samples}
        }
        missing = [m for m in samples if m.step not in have[m.key]]
        if missing:
            with deferred_interrupts():
                self.client.log_batch(self.run_id, metrics=missing, synchronous=True)

    def write_document(self) -> None:
        self.client.log_dict(self.run_id, self.document, schema.METRICS_ARTIFACT)

    def log_test(
        self, test: dict[str, dict[str, float]], best_epoch: int, skip: Collection[str] = ()
    ) -> None:
        """Test metrics at ``step=best_epoch``; keys in ``skip`` (logged by an earlier
        process of a resumed run) are not logged again."""
        now = get_current_time_millis()
        flat = flatten_metrics({"test": test})
        self._pending.append(
            [Metric(k, float(v), now, best_epoch) for k, v in flat.items() if k not in skip]
        )
        self.flush()
        self.document["test"] = test
        self.document["best_epoch"] = best_epoch
        self.write_document()


class UnsentSamples:
    """Monitoring samples from the moment they are drained until a flush has sent them,
    by epoch. The training thread adds, the writer thread confirms: hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_epoch: list[tuple[int, list[Metric]]] = []

    def add(self, epoch: int, samples: Sequence[Metric]) -> None:
        if samples:
            with self._lock:
                self._by_epoch.append((epoch, list(samples)))

    def confirm_through(self, epoch: int) -> None:
        with self._lock:
            self._by_epoch = [(e, s) for e, s in self._by_epoch if e > epoch]

    def serialized(self) -> list[list[Any]]:
        """[key, value, timestamp, step] rows, JSON-able for a checkpoint's state.json."""
        with self._lock:
            return [
                [m.key, m.value, m.timestamp, m.step]
                for _, samples in self._by_epoch
                for m in samples
            ]


def samples_of(extra: dict[str, Any]) -> list[Metric]:
    """The monitoring samples a checkpoint recorded (none for older checkpoints)."""
    rows = extra.get(MONITOR_SAMPLES) or []
    return [Metric(str(k), float(v), int(t), int(step)) for k, v, t, step in rows]
