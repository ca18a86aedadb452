"""Acceptance: the pipeline flow against `tsp server`: a real `mlflow server` (two workers)
on a private PostgreSQL cluster (initdb + pg_ctl), with proxied artifacts; then `analyze`."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

import analysis.histories as histories
import tsp_mlflow
from tests.integration.flow import check_pipeline_tree, mlflow_run, runs
from tsp_mlflow.cli import main
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.lab_server import Served, tracking_server
from tsp_mlflow.tracking.loopback_server import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """What `tsp server` starts. The cluster lives under /tmp itself: run as root,
    PostgreSQL runs as the `postgres` user, who cannot enter pytest's private tmp_path."""
    folder = Path(tempfile.mkdtemp(prefix="tsp-server-"))
    folder.chmod(0o711)  # mkdtemp's 0700 would shut the `postgres` user out
    try:
        with tracking_server(folder, postgres_port=free_port(), port=free_port(), workers=2) as s:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", s.url)
            monkeypatch.chdir(tmp_path)
            mlflow.set_tracking_uri(s.url)
            yield s
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_pipeline_and_analyze_against_a_postgresql_tracking_server(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = served.url
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    params = {
        "seeds": 2,
        "epochs": 2,  # narrow encoders: the server is under test here
        "overrides": "debug=tiny model.encoders.audio.width=4 model.encoders.image.width=4",
    }
    first = mlflow_run("pipeline", params, env)
    assert first.returncode == 0, first.stderr[-4000:]
    assert f"Tracking server: {server}" in first.stdout

    client = MlflowClient(server)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    check_pipeline_tree(client, parent, seeds=2, epochs=2, trained=True)
    pre = client.get_run(parent.data.tags[schema.pipeline_pretrain_tag("audio")])
    assert pre.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a local path
    # The server proxied the weights into its artifacts folder ...
    assert list(served.artifacts.rglob(f"{pre.info.run_id}/artifacts/encoder/model.safetensors"))
    # ... and its store is the PostgreSQL database: every run of the tree is a row there.
    import sqlalchemy

    assert served.store.startswith("postgresql+psycopg2://") and served.optuna_storage
    engine = sqlalchemy.create_engine(served.store)
    with engine.connect() as db:
        stored = {row[0] for row in db.execute(sqlalchemy.text("SELECT run_uuid FROM runs"))}
    engine.dispose()
    assert {r.info.run_id for r in runs(client, "")} == stored
    # Only over its owner-only socket: no TCP listener another user could reach.
    import psycopg2

    port = int(sqlalchemy.engine.make_url(served.store).query["port"])
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(
            host="127.0.0.1", port=port, user="tsp", dbname="mlflow", connect_timeout=5
        )
    assert (served.artifacts.parent / "postgres" / "run").stat().st_mode & 0o077 == 0
    encoder = tsp_mlflow.load_encoder("models:/avdigits-audio-encoder@champion")
    assert encoder.out_dim == 64

    # Histories through the server's bulk endpoint equal the per-run calls, and a server
    # without that endpoint (404) falls back to them.
    fusion = [r.info.run_id for r in runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")]
    keys = ["val/audio-image/accuracy", schema.TIME_EPOCH]
    bulk = histories.fetch_histories(client, fusion, keys)
    per_run = [
        (r, k, m.step, m.value)
        for r in fusion
        for k in keys
        for m in client.get_metric_history(r, k)
    ]
    assert sorted(
        bulk[["run_id", "key", "step", "value"]].itertuples(index=False, name=None)
    ) == sorted(per_run)
    endpoint = histories.BULK_HISTORY_ENDPOINT
    monkeypatch.setattr(
        histories, "BULK_HISTORY_ENDPOINT", "/ajax-api/2.0/mlflow/metrics/no-such-route"
    )
    pd.testing.assert_frame_equal(histories.fetch_histories(client, fusion, keys), bulk)
    monkeypatch.setattr(histories, "BULK_HISTORY_ENDPOINT", endpoint)

    # `tsp analyze` against the server: the first pipeline's runs, compared paired by seed.
    capsys.readouterr()
    main(
        [
            "analyze",
            "--experiment",
            "avdigits",
            "--parent-run",
            parent.info.run_id,
            "--output",
            str(Path.cwd() / "analysis-out"),
        ]
    )
    out = capsys.readouterr().out
    assert "| audio-image | accuracy | 2 |" in out
    (analysis,) = [
        r
        for r in runs(client, f"tags.`{schema.STAGE}` = 'analysis'")
        if schema.PARENT_RUN_ID not in r.data.tags
    ]  # the pipelines' own are nested
    assert analysis.info.status == "FINISHED"
    assert analysis.data.params["analysis.parent_run"] == parent.info.run_id
