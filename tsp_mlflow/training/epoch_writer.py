"""Each finished epoch written to its run: the checkpoint first, then the epoch's metrics and
monitor samples, on the tracking writer thread while the next epoch trains.

The order is what resuming relies on: every logged epoch has a checkpoint, and a sample is
known to be sent only once a flush after its checkpoint went through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from mlflow.entities import Metric

from tsp_mlflow.tracking.background import BackgroundWriter
from tsp_mlflow.tracking.epoch_log import MONITOR_SAMPLES, EpochLogger, UnsentSamples
from tsp_mlflow.training.checkpoint_artifacts import RunCheckpointer
from tsp_mlflow.training.loop import EpochMetrics
from tsp_mlflow.training.monitoring import TrainingMonitor
from tsp_mlflow.training.training_state import TrainingState


@dataclass
class _Epoch:
    snapshot: TrainingState | None
    epoch: int
    metrics: EpochMetrics
    seconds: float
    sampled: list[Metric]


class EpochWriter:
    """The training loop's end-of-epoch callback (:meth:`epoch_ended`) and what is saved
    when training stops early (:meth:`save_last_epoch`).

    Args:
        logger: sends the epoch's metrics (and replays a resumed run's history).
        checkpointer: saves a snapshot as the run's checkpoint when one is due.
        writer: the thread the writes run on, in submission order (or inline).
        snapshot: a CPU copy of the training state after an epoch, taken on the training
            thread; called only when checkpoints are enabled.
        monitor: the gradient/weight/activation sampler, if monitoring is on.
        unsent: monitor samples not yet known to be sent; each checkpoint carries them, so
            a SIGKILL after its upload loses none.
    """

    def __init__(
        self,
        logger: EpochLogger,
        checkpointer: RunCheckpointer,
        writer: BackgroundWriter,
        snapshot: Callable[[int], TrainingState],
        monitor: TrainingMonitor | None,
        unsent: UnsentSamples,
    ) -> None:
        self.logger, self.checkpointer, self.writer = logger, checkpointer, writer
        self.snapshot, self.monitor, self.unsent = snapshot, monitor, unsent
        self.last: _Epoch | None = None  # the newest finished epoch

    def epoch_ended(self, epoch: int, metrics: EpochMetrics, seconds: float) -> None:
        sampled = self.monitor.drain() if self.monitor is not None else []
        self.unsent.add(epoch, sampled)
        snapshot = None
        if self.checkpointer.enabled:  # a CPU copy of the state, only when it may be saved
            snapshot = self.snapshot(epoch)
            # Every sample not yet known to be sent: a SIGKILL after this checkpoint's
            # upload would otherwise lose them (the epochs they belong to are not retrained).
            snapshot.extra[MONITOR_SAMPLES] = self.unsent.serialized()
        finished = _Epoch(snapshot, epoch, metrics, seconds, sampled)
        self.last = finished
        self.writer.submit(lambda: self._write(finished))

    def _write(self, done: _Epoch) -> None:
        """Checkpoint, then metrics (on the writer thread: while the next epoch trains)."""
        saved = self.checkpointer.offer(done.snapshot) if done.snapshot is not None else False
        sent = saved or not self.checkpointer.enabled
        self.logger.log_epoch(done.epoch, done.metrics, done.seconds, send=sent, extra=done.sampled)
        if sent:  # the flush sent every queued sample, this epoch's and earlier ones
            self.unsent.confirm_through(done.epoch)

    def save_last_epoch(self, *, interrupted: bool) -> None:
        """Training stopped early: wait for the queued writes, then write the newest
        finished epoch whole (checkpoint, metrics, ``metrics.json``); what was written
        already is not written again. After an interrupt (SIGINT/SIGTERM) a failure to
        save is raised; after a failed run it is swallowed, as the run's own error is
        what matters (the store may not answer any more)."""
        with contextlib.suppress(Exception):  # a write that failed is redone just below
            self.writer.drain()
        if interrupted:
            self._write_last()
            return
        with contextlib.suppress(Exception):
            self._write_last()

    def _write_last(self) -> None:
        if self.last is None:
            return
        done = self.last
        if done.snapshot is not None:
            self.checkpointer.offer(done.snapshot)
            self.checkpointer.flush()
        self.logger.log_epoch(done.epoch, done.metrics, done.seconds, send=True, extra=done.sampled)
