"""A sqlite tracking store is created (or upgraded) once, under a file lock.

MLflow creates and migrates a sqlite store's schema the first time a process opens it.
Two processes doing that at once on a fresh file crash in the migration ("Online
migration expected to match one row", "duplicate column name: step"). So every tsp
command opens the store, tracking and registry tables both, while holding an exclusive
lock on ``<store>.lock`` beside it; whoever comes second finds the schema ready.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mlflow import MlflowClient

from tsp_mlflow.errors import UserInputError

try:  # POSIX; elsewhere the store is opened without the lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def prepare_sqlite_store(uri: str) -> None:
    """Open the store at ``uri`` once under its lock, so its schema exists and is current
    before this process (or any other) logs to it. A folder that cannot hold the store is
    a clear error naming MLFLOW_TRACKING_URI, not minutes of retries."""
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserInputError(
            f"MLFLOW_TRACKING_URI={uri!r}: folder {folder} does not exist; create it, or point "
            "MLFLOW_TRACKING_URI at a writable place (e.g. sqlite:///$PWD/mlflow.db)"
        )
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserInputError(
            f"MLFLOW_TRACKING_URI={uri!r}: {path if path.exists() else folder} is not writable; "
            "fix its permissions, or point MLFLOW_TRACKING_URI at a writable place"
        )
    with _locked(path.with_name(path.name + ".lock")):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # tracking tables
        client.search_registered_models(max_results=1)  # registry tables


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
