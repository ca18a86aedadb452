"""Which RUNNING runs are really running: process records, heartbeats and reaping.

MLflow leaves a run RUNNING forever when its process is SIGKILLed (or its machine dies).
Every run tsp-mlflow opens records the process that owns it (``tsp.process``:
``host:pid:start``) and a heartbeat (``tsp.heartbeat``, Unix seconds) that a daemon thread
refreshes while the run is open. A RUNNING run is then dead when

- its process is on this host and no longer exists (or the pid now belongs to a newer
  process: the start time differs), or
- its heartbeat is older than ``stale_after`` seconds (any host).

:func:`reap` marks such runs KILLED, ending them at their last heartbeat, with the reason in
``tsp.error``; ``--resume`` then continues them from their last checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus, ViewType

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking import schema

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 300.0  # 10 missed heartbeats


def heartbeat_seconds() -> float:
    """``TSP_HEARTBEAT_S`` (default 30): a number of seconds in [1, 3600]. Zero would spin
    the heartbeat thread; text is refused before any run exists, not on import."""
    text = os.environ.get("TSP_HEARTBEAT_S")
    if text is None or text.strip() == "":
        return DEFAULT_HEARTBEAT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 1.0 <= value <= 3600.0:
        raise UserInputError(
            f"TSP_HEARTBEAT_S={text!r} must be a number of seconds in [1, 3600]; unset it "
            "(default 30) or set e.g. TSP_HEARTBEAT_S=30"
        )
    return value


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid
    from the original process; empty where /proc is unavailable."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one short read
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 counted after the command name


def this_process() -> str:
    """``host:pid:start`` of the current process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def process_alive(record: str) -> bool | None:
    """True or False for a process on this host; None when it lives on another host."""
    host, _, rest = record.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return not start or _start_ticks(pid) in ("", start)


def liveness_tags() -> dict[str, str]:
    return {
        schema.PROCESS: this_process(),
        schema.HEARTBEAT: f"{time.time():.0f}",
        schema.HEARTBEAT_INTERVAL: f"{HEARTBEAT.interval:g}",
    }


class Heartbeat:
    """One daemon thread per process refreshing ``tsp.heartbeat`` on every open run."""

    def __init__(self, interval: float | None = None) -> None:
        self._interval = interval
        self._runs: dict[str, str] = {}  # run id -> tracking URI it lives in
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> float:
        """Read from TSP_HEARTBEAT_S when first needed (a bad value is caught earlier, by
        :func:`heartbeat_seconds` in the command's start-up checks)."""
        if self._interval is None:
            self._interval = heartbeat_seconds()
        return self._interval

    def add(self, run_id: str) -> None:
        with self._lock:
            self._runs[run_id] = mlflow.get_tracking_uri()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._beat, name="tsp-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def _beat(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                runs = dict(self._runs)
            for run_id, uri in runs.items():
                try:
                    MlflowClient(uri).set_tag(run_id, schema.HEARTBEAT, f"{time.time():.0f}")
                except Exception as err:  # a missed beat is harmless; the next one retries
                    log.debug("heartbeat for run %s failed: %s", run_id, err)


HEARTBEAT = Heartbeat()


@dataclass(frozen=True)
class DeadRun:
    run: Run
    reason: str
    last_seen_ms: int


def why_dead(run: Run, stale_after: float = STALE_AFTER_SECONDS) -> DeadRun | None:
    """Why a RUNNING run's process is gone, or None while it may still be running."""
    tags = run.data.tags
    record = tags.get(schema.PROCESS)
    if run.info.status != "RUNNING" or record is None:
        return None
    beat = float(tags.get(schema.HEARTBEAT) or run.info.start_time / 1000)
    last_seen_ms = int(beat * 1000)
    host, pid = record.split(":")[:2]
    alive = process_alive(record)
    if alive is False:
        return DeadRun(run, f"its process (pid {pid} on {host}) no longer exists", last_seen_ms)
    if alive:  # on this host, the process is the truth (a suspended job beats no more)
        return None
    # Another host: silence counts only when it spans many of that run's own intervals.
    age = time.time() - beat
    interval = float(tags.get(schema.HEARTBEAT_INTERVAL) or DEFAULT_HEARTBEAT_SECONDS)
    if age > max(stale_after, 3 * interval):
        return DeadRun(run, f"no heartbeat from {host} for {age:.0f} s", last_seen_ms)
    return None


def resume_hint(run: Run) -> str:
    """How to continue ``run``: a nested run (a pipeline's cell) through its parent."""
    parent = run.data.tags.get(schema.PARENT_RUN_ID)
    if parent:
        return f"continue it by rerunning its parent's command with --resume {parent}"
    return f"continue it by rerunning the command that started it with --resume {run.info.run_id}"


def mark_killed(dead: DeadRun, client: MlflowClient | None = None) -> None:
    client = client or MlflowClient()
    run_id = dead.run.info.run_id
    client.set_tag(
        run_id,
        schema.ERROR,
        f"reaped: {dead.reason}; the run was left RUNNING by a process that did not close it "
        f"(SIGKILL, out of memory, a lost machine); {resume_hint(dead.run)}",
    )
    client.set_tag(run_id, schema.REAPED, f"{time.time():.0f}")
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED), end_time=dead.last_seen_ms)


def reap(
    experiment_ids: list[str] | None = None,
    *,
    stale_after: float = STALE_AFTER_SECONDS,
    dry_run: bool = False,
) -> list[DeadRun]:
    """Mark every dead RUNNING run KILLED (``dry_run``: only list them).

    Only runs that tsp-mlflow opened (they carry ``tsp.process``) are considered: a run
    without a process record may belong to any other tool.
    """
    if stale_after <= 0:
        raise UserInputError(f"stale_after must be a positive number of seconds, got {stale_after}")
    client = MlflowClient()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments(ViewType.ACTIVE_ONLY)]
    dead: list[DeadRun] = []
    if not experiment_ids:
        return dead
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            f"attributes.status = 'RUNNING' and tags.`{schema.PROCESS}` LIKE '%'",
            max_results=1000,
            page_token=token,
        )
        dead += [d for run in page if (d := why_dead(run, stale_after)) is not None]
        token = page.token
        if not token:
            break
    if not dry_run:
        for d in dead:
            mark_killed(d, client)
    return dead
