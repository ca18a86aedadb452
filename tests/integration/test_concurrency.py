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
    return subprocess.Popen([sys.executable, "-m", "tsp_mlflow", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_concurrent_commands_on_a_fresh_sqlite_store_all_succeed(
    tmp_path: Path, subprocess_env: dict[str, str], tracking_uri: str
) -> None:
    """Regression: MLflow's schema migration crashed 2 of 3 pretrains started together
    on a new store ("Online migration expected to match one row", "duplicate column")."""
    assert not (tmp_path / "mlflow.db").exists()  # fresh: nothing has opened it yet
    procs = [start(["pretrain", "--modality", m, "--epochs", "1", "--overrides", TINY],
                   subprocess_env, tmp_path) for m in ("audio", "image", "audio")]  # fmt: skip
    outcomes = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err[-3000:]
    client = MlflowClient(tracking_uri)
    found = runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")
    assert len(found) == 3 and all(r.info.status == "FINISHED" for r in found)
    assert len(client.search_experiments()) == 2  # Default and avdigits, once each
