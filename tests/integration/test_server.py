"""Acceptance: the same pipeline flow against a real `mlflow server` process on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

import analysis.data as data
import tsp_mlflow
from tests.integration.flow import check_pipeline_tree, mlflow_run, runs
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`mlflow server --workers 1` with artifact proxying, in its own process group."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],  # fmt: skip
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.chdir(tmp_path)
        mlflow.set_tracking_uri(url)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_pipeline_against_a_real_tracking_server(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    params = {"seeds": 2, "epochs": 2, "overrides": "debug=tiny"}
    first = mlflow_run("pipeline", params, env)
    assert first.returncode == 0, first.stderr[-4000:]
    assert f"Tracking server: {server}" in first.stdout

    client = MlflowClient(server)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    check_pipeline_tree(client, parent, seeds=2, epochs=2, trained=True)
    pre = client.get_run(parent.data.tags[schema.pipeline_pretrain_tag("audio")])
    assert pre.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a local path
    encoder = tsp_mlflow.load_encoder("models:/avdigits-audio-encoder@champion")
    assert encoder.out_dim == 64

    # Histories through the server's bulk endpoint equal the per-run calls, and a server
    # without that endpoint (404) falls back to them.
    fusion = [r.info.run_id for r in runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")]
    keys = ["val/audio-image/accuracy", schema.TIME_EPOCH]
    bulk = data.fetch_histories(client, fusion, keys)
    per_run = [
        (r, k, m.step, m.value)
        for r in fusion
        for k in keys
        for m in client.get_metric_history(r, k)
    ]
    assert sorted(
        bulk[["run_id", "key", "step", "value"]].itertuples(index=False, name=None)
    ) == sorted(per_run)
    endpoint = data.BULK_HISTORY_ENDPOINT
    monkeypatch.setattr(data, "BULK_HISTORY_ENDPOINT", "/ajax-api/2.0/mlflow/metrics/no-such-route")
    pd.testing.assert_frame_equal(data.fetch_histories(client, fusion, keys), bulk)
    monkeypatch.setattr(data, "BULK_HISTORY_ENDPOINT", endpoint)

    second = mlflow_run("pipeline", params, env)
    assert second.returncode == 0, second.stderr[-4000:]
    assert len(runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")) == 2
    newest = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")[0]
    check_pipeline_tree(client, newest, seeds=2, epochs=2, trained=False)
