"""Tracking writes off the training thread, still in order.

Each epoch ends with a checkpoint upload, a batch of metrics and a ``metrics.json``. One
worker thread can do them while the next epoch trains, in submission order, so an epoch's
checkpoint still lands before its metrics.

MLflow's own async logging (``synchronous=False``) queues metrics only: artifacts would
race ahead of or behind them, and a resumed run relies on that order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

from tsp_mlflow.errors import UserInputError

log = logging.getLogger(__name__)

BACKGROUND_WRITES = ("auto", True, False)


def writes_in_background(setting: object, device_type: str) -> bool:
    """``tracking.background_writes``: ``auto`` is background on an accelerator, where the
    training thread mostly waits for kernels and a writer thread overlaps for free, and
    inline on a CPU, where it would take cores and the GIL from training: measured, a
    writer thread costs a CPU-bound avdigits epoch more than the same writes inline."""
    if setting not in BACKGROUND_WRITES:
        raise UserInputError(
            f"tracking.background_writes must be auto, true or false, got {setting!r}"
        )
    return device_type != "cpu" if setting == "auto" else bool(setting)


class BackgroundWriter:
    """Run tracking jobs on one worker thread, at most one job in flight.

    :meth:`submit` first waits for the previous job, so memory holds at most two epochs'
    snapshots and a slow server slows training down instead of queueing without bound.
    A job's exception is raised in the training thread by the next :meth:`submit` or
    :meth:`drain` (a lost server then surfaces one epoch late, with the checkpoint of the
    epoch before). ``enabled=False`` runs each job inline.

    Use it as a context manager: leaving the block waits for the last job; when the block
    already raised, a job's own error is logged rather than hiding that exception.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsp-tracking")
            if enabled
            else None
        )
        self._pending: Future[None] | None = None

    def submit(self, job: Callable[[], None]) -> None:
        self.drain()
        if self._pool is None:
            job()
        else:
            self._pending = self._pool.submit(job)

    def drain(self) -> None:
        """Wait for the job in flight; raise its exception, if any. A wait cut short (a
        signal) keeps the job in flight, so the next drain waits for it again."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        finally:
            if pending.done():
                self._pending = None

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.drain()
            else:
                try:
                    self.drain()
                except BaseException as job_error:  # the block's own exception wins
                    log.warning("a tracking write failed while stopping: %s", job_error)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
