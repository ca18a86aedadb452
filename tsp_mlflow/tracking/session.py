"""Run lifecycle: where runs are stored, how they start, and how failures are recorded."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from tsp_mlflow.errors import ResumeTaken, RunStopped, TrackingServerLost, UserInputError
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.claims import Superseded
from tsp_mlflow.tracking.liveness import HEARTBEAT, heartbeat_seconds, liveness_tags
from tsp_mlflow.tracking.local_store import check_store_uri, prepare_sqlite_store
from tsp_mlflow.tracking.params import has_credentials, redact_uri
from tsp_mlflow.tracking.server_check import check_tracking_server, is_unreachable

log = logging.getLogger(__name__)

MAX_TAG_LENGTH = 5000


def configure_tracking(*, prepare_store: bool = True) -> str:
    """Point MLflow at ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    MLflow's own default is the same sqlite file, except that a leftover ``./mlruns``
    silently switches it to the file store; naming the URI rules that out.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline tool: no phone-home
    # One progress bar per encoder download floods pipeline logs (a grid loads many).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Ride out a server restart of up to ~8 minutes mid-run (retries at 1, 2, 4, ... 120 s)
    # instead of MLflow's 4; the start-up check below does not retry at all.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "10")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # Set explicitly either way: a URI set earlier in this process must not shadow the env.
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if has_credentials(uri):  # MLflow's "View run ... at http://alice:pw@..." would show them
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    check_environment()
    check_store_uri(uri)
    mlflow.set_tracking_uri(uri)
    check_tracking_server(uri)
    if prepare_store:  # `tsp ui` leaves that to `mlflow ui`, which migrates it itself
        prepare_sqlite_store(uri)
    return uri


def check_environment() -> None:
    """The environment variables tsp reads, checked before anything touches a store:
    ``TSP_HEARTBEAT_S`` and ``TSP_DATA_DIR``."""
    heartbeat_seconds()
    data_dir = os.environ.get("TSP_DATA_DIR")
    if data_dir is None:
        return
    try:
        data_dir.encode("utf-8")
    except UnicodeEncodeError:
        shown = data_dir.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise UserInputError(
            f"TSP_DATA_DIR={shown!r} is not valid UTF-8 (it is recorded in run tags and params); "
            "use a UTF-8 path"
        ) from None
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise UserInputError(
            f"TSP_DATA_DIR={data_dir!r} is a file, not a folder; point it at a folder (created "
            "if missing) where the built-in dataset and digests are cached"
        )
    if len(str(path)) > 4000 or any(len(part) > 255 for part in path.parts):
        raise UserInputError(
            f"TSP_DATA_DIR={data_dir[:80]!r}…: the path is too long; use a shorter one"
        )


_experiment_we_set: str | None = None
_experiment_pending: str | None = None  # use_experiment(..., when_a_run_starts=True)
MAX_EXPERIMENT_NAME = 500


def use_experiment(name: str, *, when_a_run_starts: bool = False) -> None:
    """Select ``name`` unless ``mlflow run`` or the user's environment already chose one.

    ``mlflow.set_experiment`` itself exports ``MLFLOW_EXPERIMENT_ID``; a value we set
    earlier in this process is ours to replace, not the user's choice. With
    ``when_a_run_starts`` the experiment is created (if new) only when the next top-level
    run starts, so a command that fails before it (a data file that is not one) leaves no
    empty experiment behind.
    """
    global _experiment_we_set, _experiment_pending
    # One choice at a time: a choice deferred by an earlier command in this process (one
    # that failed before its run started) must not place this command's run, whoever
    # chooses for this one (us, `mlflow run` or the user's environment).
    _experiment_pending = None
    chosen = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
    if len(chosen) > MAX_EXPERIMENT_NAME:  # MLflow's limit, checked before anything exists
        raise UserInputError(
            f"experiment name of {len(chosen)} characters ({chosen[:40]!r}…): MLflow allows at "
            f"most {MAX_EXPERIMENT_NAME}; set a shorter tracking.experiment (or "
            "MLFLOW_EXPERIMENT_NAME)"
        )
    env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if os.environ.get("MLFLOW_RUN_ID") or (env_id and env_id != _experiment_we_set):
        return
    if when_a_run_starts:
        _experiment_pending = chosen
        return
    try:
        experiment = mlflow.set_experiment(chosen)
    except MlflowException as err:  # another process created it a moment ago
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        experiment = mlflow.set_experiment(chosen)
    _experiment_we_set = experiment.experiment_id


def _pending_experiment_id() -> str | None:
    """The experiment a deferred :func:`use_experiment` chose, created now if new."""
    global _experiment_pending
    if _experiment_pending is None:
        return None
    name, _experiment_pending = _experiment_pending, None
    use_experiment(name)
    return _experiment_we_set


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
    While open, the run carries its process record and a heartbeat (``tsp runs reap``
    tells a SIGKILLed run from a live one by them). When the tracking server itself is
    unreachable the run cannot be closed: it stays RUNNING, and the error says how to
    reap and resume it once the server is back.
    """
    active = mlflow.active_run()
    if nested and active is not None:
        # A child lives beside its parent, whatever experiment this process selected: a
        # resumed pipeline never selects one (its parent's is fixed), and MLflow would
        # otherwise put the child in Default.
        experiment_id = active.info.experiment_id
    elif parent_run_id:
        experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    elif nested or os.environ.get("MLFLOW_RUN_ID"):
        experiment_id = None
    elif experiment_id is None and run_id is None:
        experiment_id = _pending_experiment_id()
    global last_signal
    if not nested:
        last_signal = None
    tags = {**tags, **liveness_tags()}
    if run_id:
        _select_experiment_of(run_id)
        run = mlflow.start_run(run_id=run_id, nested=nested, tags=tags)
    else:
        run = mlflow.start_run(
            run_name=run_name,
            nested=nested,
            tags=tags,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
        )
    HEARTBEAT.add(run.info.run_id)
    if not nested and not parent_run_id:
        mark_training_experiment(run.info.experiment_id)
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    if not nested:  # turn SIGTERM/SIGHUP into an exception so the run is closed as KILLED
        for s in STOP_SIGNALS:
            signal.signal(s, _raise_keyboard_interrupt)
    try:
        yield run
        mlflow.end_run(
            RunStatus.to_string(RunStatus.FINISHED)
        )  # inside try: a failure here fails the run
    except KeyboardInterrupt:
        _end(run.info.run_id, RunStatus.KILLED, "interrupted (SIGINT/SIGTERM/SIGHUP)")
        if not nested:
            print(
                f"run {run.info.run_id} stopped (KILLED) after saving a checkpoint; continue it "
                f"by rerunning the same command with --resume {run.info.run_id}",
                file=sys.stderr,
                flush=True,
            )
        raise
    except ResumeTaken:  # another process holds the run now: leave it alone
        _forget_active_runs()
        raise
    except RunStopped as err:
        _end(run.info.run_id, RunStatus.KILLED, str(err), tag=schema.STOPPED)
        raise
    except Superseded as err:  # an identical run claimed the work first: leave no trace
        _end(run.info.run_id, RunStatus.KILLED, str(err), tag=schema.STOPPED)
        MlflowClient().delete_run(run.info.run_id)
        raise
    except TrackingServerLost as err:
        _forget_active_runs()
        if nested:
            raise
        # The outermost run is the one to resume (a pipeline, not its cell).
        raise TrackingServerLost(run.info.run_id, err.__cause__ or err) from err
    except BaseException as err:
        if is_unreachable(err):
            _forget_active_runs()
            raise TrackingServerLost(run.info.run_id, err) from err
        _end(run.info.run_id, RunStatus.FAILED, f"{type(err).__name__}: {err}")
        raise
    finally:
        HEARTBEAT.remove(run.info.run_id)
        if not nested:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _select_experiment_of(run_id: str) -> None:
    """Make a reopened run's experiment the active one. MLflow refuses to reopen a run
    outside the experiment this process selected last (an earlier command in the same
    process, a notebook's ``set_experiment``); a resumed run's experiment is fixed."""
    global _experiment_we_set, _experiment_pending
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    _experiment_we_set, _experiment_pending = experiment_id, None


_kind_checked: set[tuple[str, str]] = set()  # (tracking URI, experiment id)


def mark_training_experiment(experiment_id: str) -> None:
    """Tag the experiment as model training (once per process), unless it has a kind."""
    key = (mlflow.get_tracking_uri(), experiment_id)
    if key in _kind_checked:
        return
    client = MlflowClient()
    if schema.EXPERIMENT_KIND not in client.get_experiment(experiment_id).tags:
        try:
            client.set_experiment_tag(
                experiment_id, schema.EXPERIMENT_KIND, schema.EXPERIMENT_KIND_TRAINING
            )
        except MlflowException:  # a concurrent command tagged it first (a unique key)
            if schema.EXPERIMENT_KIND not in client.get_experiment(experiment_id).tags:
                raise
    _kind_checked.add(key)


def _forget_active_runs() -> None:
    """Drop this process's open runs without ending them: ending one would only retry
    against the unreachable server for minutes. (MLflow has no public call for this.)"""
    stack = mlflow.tracking.fluent._active_run_stack.get()
    stack.clear()


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done (a checkpoint upload is never torn by
    them), then raise ``KeyboardInterrupt`` if one arrived. No-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        global last_signal
        last_signal = signum
        if received:  # asked twice: the user means it now
            raise KeyboardInterrupt(f"signal {signum}")
        received.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")


def fail_pending_project_run(reason: str, status: str = "FAILED") -> None:
    """End the run that ``mlflow run`` created (FAILED or KILLED) when we fail before attaching."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    client = MlflowClient()
    client.set_tag(run_id, schema.ERROR, redact_uri(reason)[:MAX_TAG_LENGTH])
    client.set_terminated(run_id, status)


def _end(run_id: str, status: int, reason: str, tag: str = schema.ERROR) -> None:
    client = MlflowClient()
    try:
        client.set_tag(run_id, tag, redact_uri(reason)[:MAX_TAG_LENGTH])
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(RunStatus.to_string(status))
        else:  # not the active run any more (e.g. ended already): close it directly
            client.set_terminated(run_id, RunStatus.to_string(status))


# SIGHUP: a closed terminal or a lost ssh session.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
last_signal: int | None = None  # the CLI exits with 128 + it


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    global last_signal
    last_signal = signum
    raise KeyboardInterrupt(f"signal {signum}")


def where_to_look(uri: str) -> str:
    """The closing lines of a command: where its runs are and how to browse them."""
    uri = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"Tracking server: {uri} (open it in a browser)"
    here = uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"  # tsp ui's own default
    return (
        f"Tracking store: {uri}\nBrowse the runs:  tsp ui"
        f"{'' if here else f' --backend-store-uri {uri}'}   (it prints the URL to open)"
    )
