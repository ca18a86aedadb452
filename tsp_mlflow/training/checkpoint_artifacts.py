"""Checkpoints as run artifacts: written every N epochs, read back to resume the same run.

Each checkpoint goes to ``checkpoints/epoch-NNNN/``; the previous one is deleted only once
the new one is complete, so a crash mid-upload always leaves one whole checkpoint behind.
Writes happen with SIGINT/SIGTERM deferred, so an interrupt cannot tear them either (on
the :class:`~tsp_mlflow.tracking.background.BackgroundWriter` thread signals never arrive).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time

import mlflow
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.session import deferred_interrupts
from tsp_mlflow.training import training_state
from tsp_mlflow.training.training_state import CheckpointError, TrainingState

log = logging.getLogger(__name__)
_EPOCH_DIR = re.compile(r"epoch-(\d+)$")


class RunCheckpointer:
    """Saves run ``run_id``'s training state every ``every_n_epochs`` epochs, at most once
    per ``min_interval_s`` seconds, and always at the last epoch.

    Between saves the newest state is held in memory, so :meth:`flush` (on SIGINT/SIGTERM)
    still writes the last completed epoch. ``every_n_epochs=0`` turns checkpoints off.
    The interval bounds what a checkpoint of short epochs costs (bench/tracking_overhead.py);
    a SIGKILL loses at most that much training, a graceful stop none.
    """

    def __init__(
        self, run_id: str, every_n_epochs: int, last_epoch: int, min_interval_s: float = 0.0
    ) -> None:
        self.run_id = run_id
        self.client = MlflowClient()
        self._artifact_uri: str | None = None
        self.every_n_epochs = every_n_epochs
        self.last_epoch = last_epoch
        self.min_interval_s = min_interval_s
        self.saved_epoch = 0
        self._saved_at = time.monotonic()  # the interval also runs from the start
        self._pending: TrainingState | None = None
        self._saved_path: str | None = None

    @property
    def enabled(self) -> bool:
        return self.every_n_epochs > 0

    def offer(self, state: TrainingState) -> bool:
        """Keep ``state`` as the newest; write it if a save is due. True if written."""
        if not self.enabled:
            return False
        self._pending = state
        due = state.epoch % self.every_n_epochs == 0 and (
            time.monotonic() - self._saved_at >= self.min_interval_s
        )
        if due or state.epoch == self.last_epoch:
            return self.flush()
        return False

    def flush(self) -> bool:
        """Write the newest state unless it is written already. True if written."""
        state, self._pending = self._pending, None
        if state is None or state.epoch <= self.saved_epoch:
            return False
        path = schema.checkpoint_path(state.epoch)
        with deferred_interrupts(), tempfile.TemporaryDirectory(prefix="tsp-ckpt-") as tmp:
            training_state.save(state, tmp)
            self.client.log_artifacts(self.run_id, tmp, path)
            previous, self._saved_path, self.saved_epoch = self._saved_path, path, state.epoch
            if previous is not None and previous != path:  # the same path was overwritten
                self._delete(previous)
        self._saved_at = time.monotonic()
        return True

    def adopt(self, loaded_epoch: int | None) -> None:
        """After a resume from ``loaded_epoch``: keep that checkpoint as the one the next
        save supersedes, and delete every other (a torn newer one, older leftovers)."""
        keep = schema.checkpoint_path(loaded_epoch) if loaded_epoch else None
        for _, path in checkpoint_paths(self.run_id):
            if path != keep:
                self._delete(path)
        self._saved_path = keep
        self.saved_epoch = loaded_epoch or 0

    def _delete(self, path: str) -> None:
        try:
            if self._artifact_uri is None:
                self._artifact_uri = self.client.get_run(self.run_id).info.artifact_uri
            get_artifact_repository(self._artifact_uri).delete_artifacts(path)
        except Exception as err:  # an old checkpoint left behind costs space, not correctness
            log.warning("could not delete the superseded checkpoint %s: %s", path, err)


def checkpoint_paths(run_id: str) -> list[tuple[int, str]]:
    """(epoch, artifact path) of a run's checkpoints, newest first."""
    found = []
    for info in MlflowClient().list_artifacts(run_id, schema.CHECKPOINT_DIR):
        match = _EPOCH_DIR.search(info.path)
        if info.is_dir and match:
            found.append((int(match.group(1)), info.path))
    return sorted(found, reverse=True)


def latest_checkpoint(run_id: str) -> TrainingState | None:
    """The newest complete checkpoint of ``run_id``; torn ones are skipped with a warning."""
    for epoch, path in checkpoint_paths(run_id):
        with tempfile.TemporaryDirectory(prefix="tsp-ckpt-") as tmp:
            folder = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=tmp
            )
            try:
                state = training_state.load(folder)
            except CheckpointError as err:
                log.warning("skipping the checkpoint of epoch %d: %s", epoch, err)
                continue
        return state
    return None


def logged_epochs(run_id: str) -> set[int]:
    """Epochs whose metrics the run already holds (one batched call logs an epoch whole)."""
    history = MlflowClient().get_metric_history(run_id, schema.TIME_EPOCH)
    return {m.step for m in history}
