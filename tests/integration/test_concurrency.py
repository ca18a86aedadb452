"""Several tsp commands at once on one store: none crashes, none duplicates work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.flow import runs
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration
TINY = "debug=tiny representations=false model.encoders.audio.width=4 model.encoders.image.width=4"


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tsp_mlflow", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


PIPELINE = ["pipeline", "--seeds", "1", "--epochs", "1", "--overrides", TINY]


def check_each_encoder_pretrained_once(client: MlflowClient, procs: list, outcomes: list) -> None:
    for proc, (_, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err[-3000:]
    pretrain = runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")  # deleted runs excluded
    assert sorted(r.data.tags[schema.MODALITY] for r in pretrain) == ["audio", "image"]
    assert all(r.info.status == "FINISHED" for r in pretrain)
    for m in ("audio", "image"):
        assert len(client.search_model_versions(f"name = 'avdigits-{m}-encoder'")) == 1
    pipelines = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    assert len(pipelines) == 3 and all(p.info.status == "FINISHED" for p in pipelines)
    used = {
        (m, p.data.tags[schema.pipeline_pretrain_tag(m)])
        for p in pipelines
        for m in ("audio", "image")
    }
    assert used == {(r.data.tags[schema.MODALITY], r.info.run_id) for r in pretrain}
    assert sum(p.data.tags[schema.pipeline_reused_tag("audio")] == "true" for p in pipelines) == 2


def test_three_identical_pipelines_at_once_on_a_fresh_store_pretrain_each_encoder_once(
    tmp_path: Path, subprocess_env: dict[str, str], tracking_uri: str
) -> None:
    """Regressions: on a new sqlite store, commands started together crashed in MLflow's
    schema migration ("Online migration expected to match one row", "duplicate column
    name: step"); and concurrent identical pipelines each pretrained every encoder (4
    pretrain runs and 2 versions per encoder). The store is now created once under a
    lock, and the first pipeline claims each pretraining while the others wait."""
    assert not (tmp_path / "mlflow.db").exists()  # fresh: nothing has opened it yet
    procs = [start(PIPELINE, subprocess_env, tmp_path) for _ in range(3)]
    outcomes = [p.communicate(timeout=900) for p in procs]
    check_each_encoder_pretrained_once(MlflowClient(tracking_uri), procs, outcomes)
    assert len(MlflowClient(tracking_uri).search_experiments()) == 2  # Default, avdigits


def test_the_same_on_a_postgresql_tracking_server(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    import shutil
    import tempfile

    from tsp_mlflow.tracking.lab_server import tracking_server
    from tsp_mlflow.tracking.loopback_server import free_port

    folder = Path(tempfile.mkdtemp(prefix="tsp-server-"))
    folder.chmod(0o711)  # under root PostgreSQL runs as `postgres`, who must reach it
    try:
        with tracking_server(folder, postgres_port=free_port(), port=free_port(), workers=2) as s:
            env = {**subprocess_env, "MLFLOW_TRACKING_URI": s.url}
            procs = [start(PIPELINE, env, tmp_path) for _ in range(3)]
            outcomes = [p.communicate(timeout=900) for p in procs]
            check_each_encoder_pretrained_once(MlflowClient(s.url), procs, outcomes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
