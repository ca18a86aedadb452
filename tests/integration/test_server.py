"""Acceptance: the same pipeline flow against a real `mlflow server` process on loopback."""

from __future__ import annotations

import os
import sys
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
from tsp_mlflow.tracking.local_server import local_server

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`mlflow server --workers 1` with artifact proxying, in its own process group."""
    with local_server(tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.chdir(tmp_path)
        mlflow.set_tracking_uri(url)
        yield url


def test_pipeline_against_a_real_tracking_server(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    params = {"seeds": 2, "epochs": 2,  # narrow encoders: the server is under test here
              "overrides": "debug=tiny model.encoders.audio.width=4 model.encoders.image.width=4"}  # fmt: skip
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
