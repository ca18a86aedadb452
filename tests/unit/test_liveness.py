"""Reaping: which RUNNING runs are dead, and what marking them does."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from mlflow import MlflowClient

from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.liveness import process_alive, reap, this_process


def dead_pid_record() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: this pid no longer exists
    return f"{socket.gethostname()}:{proc.pid}:1"


def test_process_records_tell_live_from_dead() -> None:
    assert process_alive(this_process()) is True
    assert process_alive(dead_pid_record()) is False
    # The same pid with another start time is a newer process: the original is gone.
    host, pid, _ = this_process().split(":")
    assert process_alive(f"{host}:{pid}:999999999999") is False
    assert process_alive("another-host:1:1") is None  # not ours to judge by pid


@pytest.mark.slow
def test_reap_marks_only_dead_runs_killed_at_their_last_heartbeat(tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("reap")
    now = time.time()
    records = {
        "alive here": (this_process(), now),
        "dead here": (dead_pid_record(), now - 5),
        "silent elsewhere": ("another-host:42:7", now - 3600),
        "beating elsewhere": ("another-host:43:7", now - 10),
    }
    ids = {}
    for name, (record, beat) in records.items():
        run = client.create_run(
            experiment,
            run_name=name,
            tags={schema.PROCESS: record, schema.HEARTBEAT: f"{beat:.0f}"},
        )
        ids[name] = run.info.run_id
    foreign = client.create_run(experiment, run_name="another tool").info.run_id  # no record

    listed = reap([experiment], stale_after=300, dry_run=True)
    assert sorted(d.run.info.run_name for d in listed) == ["dead here", "silent elsewhere"]
    assert all(client.get_run(i).info.status == "RUNNING" for i in ids.values())  # dry run

    reap([experiment], stale_after=300)
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {
        "alive here": "RUNNING",
        "dead here": "KILLED",
        "silent elsewhere": "KILLED",
        "beating elsewhere": "RUNNING",
    }
    assert client.get_run(foreign).info.status == "RUNNING"
    silent = client.get_run(ids["silent elsewhere"])
    assert silent.info.end_time == round(records["silent elsewhere"][1]) * 1000  # last beat
    assert "no heartbeat from another-host" in silent.data.tags[schema.ERROR]
    assert f"--resume {ids['silent elsewhere']}" in silent.data.tags[schema.ERROR]
    assert "no longer exists" in client.get_run(ids["dead here"]).data.tags[schema.ERROR]
