"""Shared fixtures: a per-session data cache and a private sqlite tracking store per test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # the suite runs offline
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Parallel workers (make test: -n auto) share the cores; without this each worker's
    # torch, and each `mlflow run` it starts, would claim them all. Read before torch loads.
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One avdigits cache for the whole session (generated once, a few seconds)."""
    path = Path(os.environ.get("TSP_TEST_DATA_DIR") or tmp_path_factory.mktemp("data"))
    os.environ["TSP_DATA_DIR"] = str(path)
    return path


MLFLOW_RUN_SCOPED_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(autouse=True)
def clean_mlflow_env() -> Iterator[None]:
    """mlflow.set_experiment() exports MLFLOW_EXPERIMENT_ID and keeps a module-global active
    experiment; neither may leak into a test that uses another store."""
    for name in MLFLOW_RUN_SCOPED_ENV:
        os.environ.pop(name, None)
    mlflow.tracking.fluent._active_experiment_id = None
    yield
    while mlflow.active_run():
        mlflow.end_run()
    for name in MLFLOW_RUN_SCOPED_ENV:
        os.environ.pop(name, None)
    mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite store in a temp dir; artifacts land beside it, never in the repo."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # sqlite's default artifact root is ./mlruns
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def subprocess_env(tracking_uri: str) -> dict[str, str]:
    """Environment for `mlflow run` / `python -m tsp_mlflow`: this venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env
