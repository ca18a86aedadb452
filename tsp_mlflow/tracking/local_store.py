"""A sqlite tracking store is created (or upgraded) once, under a file lock.

MLflow creates and migrates a sqlite store's schema the first time a process opens it.
Two processes doing that at once on a fresh file crash in the migration ("Online
migration expected to match one row", "duplicate column name: step"). So every tsp
command opens the store, tracking and registry tables both, while holding an exclusive
lock (named by the store's path, in the user's temporary folder); whoever comes second
finds the schema ready.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlflow import MlflowClient

from tsp_mlflow.errors import UserInputError

# What MLflow can track into (its tracking and registry stores both). `file:` and bare
# paths are MLflow's file store, which raises unless MLFLOW_ALLOW_FILE_STORE is set.
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file", "")
FIX = (
    "point MLFLOW_TRACKING_URI at a writable place, e.g. sqlite:///$PWD/mlflow.db, or a "
    "server: http://host:5000"
)


class TrackingStoreError(UserInputError):
    """The tracking store at MLFLOW_TRACKING_URI cannot be used; the message says why."""


def check_store_uri(uri: str) -> None:
    """A scheme MLflow can store runs in, named with the fix; not MLflow's misleading
    "model registry functionality is unavailable" for a typo."""
    scheme = uri.partition("://")[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in SCHEMES:
        raise TrackingStoreError(
            f"MLFLOW_TRACKING_URI={uri!r}: {scheme!r} is not a tracking store MLflow knows "
            f"(sqlite, postgresql, mysql, mssql, http, https); {FIX}"
        )


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
    if len(str(path)) > 4000 or any(len(part) > 255 for part in path.parts):
        raise TrackingStoreError(f"MLFLOW_TRACKING_URI={uri[:80]!r}…: the path is too long; {FIX}")
    if path.is_dir():
        raise TrackingStoreError(
            f"MLFLOW_TRACKING_URI={uri!r}: {path} is a folder, not a file; {FIX}"
        )
    if not folder.is_dir():
        raise TrackingStoreError(
            f"MLFLOW_TRACKING_URI={uri!r}: folder {folder} does not exist; create it, or {FIX}"
        )
    lock = lock_path(path)
    try:  # a real write, not os.access: root passes access checks on a read-only mount
        with open(path, "ab"):
            pass
    except OSError as err:
        raise TrackingStoreError(
            f"MLFLOW_TRACKING_URI={uri!r}: cannot write there ({err.strerror}); {FIX}"
        ) from None
    with _locked(lock), _quiet_schema_logs():
        client = MlflowClient(uri)
        try:
            client.search_experiments(max_results=1)  # tracking tables
            client.search_registered_models(max_results=1)  # registry tables
        except Exception as err:  # sqlite's OperationalError, a corrupt file: name the store
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise TrackingStoreError(
                f"MLFLOW_TRACKING_URI={uri!r}: the store cannot be opened ({first[:200]}); "
                f"is it a MLflow sqlite database? {FIX}"
            ) from None


def lock_path(store: Path) -> Path:
    """The store's lock, in this user's temporary folder (never beside the store: a dry
    run leaves no file there), named by the store's absolute path."""
    digest = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:20]
    folder = Path(tempfile.gettempdir()) / f"tsp-mlflow-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{digest}.lock"


@contextlib.contextmanager
def _quiet_schema_logs() -> Iterator[None]:
    """MLflow logs "Creating initial MLflow database tables" at INFO; the command's own
    output (an error line, a plan) must stay the first thing a user reads."""
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


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
