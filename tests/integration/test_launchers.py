"""Acceptance: a Hydra grid through Hydra's own launchers. joblib runs the jobs in parallel
worker processes; submitit's local executor runs them as separate jobs, the way its SLURM
executor (conf/hydra/launcher/slurm.yaml) does on a cluster. Either way each job is one
MLflow run under the multirun's one parent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.flow import children, runs
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration

NARROW = ["debug=tiny", "model.encoders.audio.width=4", "model.encoders.image.width=4"]


def multirun(
    launcher: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "tsp_mlflow.multirun",
        "-m",
        *launcher,
        "seed=0,1",
        *NARROW,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def check_grid(client: MlflowClient) -> None:
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = '{schema.STAGE_MULTIRUN}'")
    assert parent.info.status == "FINISHED"
    jobs = children(client, parent.info.run_id)
    assert sorted((r.data.tags[schema.SEED], r.data.tags[schema.MULTIRUN_JOB]) for r in jobs) == [
        ("0", "0"),
        ("1", "1"),
    ]
    assert all(
        r.info.status == "FINISHED" and r.data.tags[schema.STAGE] == "multimodal" for r in jobs
    )
    assert len(runs(client, "")) == 3  # the parent and its two jobs, nothing else


def test_a_two_job_grid_with_the_joblib_launcher(
    subprocess_env: dict[str, str], tracking_uri: str, tmp_path: Path
) -> None:
    done = multirun(["hydra/launcher=local_parallel"], subprocess_env, tmp_path)
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr  # Hydra's joblib launcher ran it
    check_grid(MlflowClient(tracking_uri))


def test_a_two_job_grid_with_the_submitit_launcher(
    subprocess_env: dict[str, str], tracking_uri: str, tmp_path: Path
) -> None:
    multirun(
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.timeout_min=10",
        ],
        subprocess_env,
        tmp_path,
    )
    check_grid(MlflowClient(tracking_uri))
    # submitit ran each job as its own job, with its own log folder
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2, logs


def test_the_slurm_preset_composes_to_submitit(tmp_path: Path) -> None:
    """No SLURM here: the preset resolves to submitit's SLURM launcher with our settings."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsp_mlflow.multirun",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "--cfg",
            "hydra",
            "--package",
            "hydra.launcher",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
        in done.stdout
    )
    assert "partition: gpu" in done.stdout and "array_parallelism: 64" in done.stdout
