"""Run lifecycle: where runs are stored, how they start, and how failures are recorded."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from tsp_mlflow.errors import RunStopped
from tsp_mlflow.tracking import schema

MAX_TAG_LENGTH = 5000


def configure_tracking() -> str:
    """Point MLflow at ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    MLflow's own default is the same sqlite file, except that a leftover ``./mlruns``
    silently switches it to the file store; naming the URI rules that out.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline tool: no phone-home
    # One progress bar per encoder download floods pipeline logs (a grid loads many).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Set explicitly either way: a URI set earlier in this process must not shadow the env.
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


_experiment_we_set: str | None = None


def use_experiment(name: str) -> None:
    """Select ``name`` unless ``mlflow run`` or the user's environment already chose one.

    ``mlflow.set_experiment`` itself exports ``MLFLOW_EXPERIMENT_ID``; a value we set
    earlier in this process is ours to replace, not the user's choice.
    """
    global _experiment_we_set
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if os.environ.get("MLFLOW_RUN_ID") or (env_id and env_id != _experiment_we_set):
        return
    experiment = mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or name)
    _experiment_we_set = experiment.experiment_id


@contextmanager
def tracked_run(
    *,
    run_name: str,
    tags: dict[str, str],
    nested: bool = False,
    experiment_id: str | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start a run (or attach to the one ``mlflow run`` created) and end it honestly.

    ``experiment_id`` places a top-level run; it is ignored when attaching to the run that
    ``mlflow run`` created, whose experiment is already fixed. ``run_id`` reopens an
    existing run (a resumed pipeline, a sweep's trial) instead of starting one.
    ``parent_run_id`` nests a new run under a run this process does not hold open (a
    sweep's parent, shared by several worker processes).

    On success the run ends FINISHED. On an exception it ends FAILED with the reason in
    ``tsp.error``; on Ctrl-C or SIGTERM it ends KILLED, and so does a :class:`RunStopped`
    (a pruned trial), with its reason in ``tsp.stopped``. The exception is re-raised.
    """
    if nested or parent_run_id or os.environ.get("MLFLOW_RUN_ID"):
        experiment_id = None
    if run_id:
        run = mlflow.start_run(run_id=run_id, nested=nested, tags=tags)
    else:
        run = mlflow.start_run(run_name=run_name, nested=nested, tags=tags,
                               experiment_id=experiment_id, parent_run_id=parent_run_id)  # fmt: skip
    previous = signal.getsignal(signal.SIGTERM)
    if not nested:  # turn SIGTERM into an exception so the run is closed as KILLED
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield run
        mlflow.end_run(
            RunStatus.to_string(RunStatus.FINISHED)
        )  # inside try: a failure here fails the run
    except KeyboardInterrupt:
        _end(run.info.run_id, RunStatus.KILLED, "interrupted (SIGINT/SIGTERM)")
        raise
    except RunStopped as err:
        _end(run.info.run_id, RunStatus.KILLED, str(err), tag=schema.STOPPED)
        raise
    except BaseException as err:
        _end(run.info.run_id, RunStatus.FAILED, f"{type(err).__name__}: {err}")
        raise
    finally:
        if not nested:
            signal.signal(signal.SIGTERM, previous)


def fail_pending_project_run(reason: str, status: str = "FAILED") -> None:
    """End the run that ``mlflow run`` created (FAILED or KILLED) when we fail before attaching."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    client = MlflowClient()
    client.set_tag(run_id, schema.ERROR, reason[:MAX_TAG_LENGTH])
    client.set_terminated(run_id, status)


def _end(run_id: str, status: int, reason: str, tag: str = schema.ERROR) -> None:
    client = MlflowClient()
    try:
        client.set_tag(run_id, tag, reason[:MAX_TAG_LENGTH])
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(RunStatus.to_string(status))
        else:  # not the active run any more (e.g. ended already): close it directly
            client.set_terminated(run_id, RunStatus.to_string(status))


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
