"""Acceptance: tracking-server faults, against real `mlflow server` processes.

- a server that is not there fails the command at once, not after minutes of retries;
- a server killed and restarted mid-run gets every metric once it is back;
- a server gone for longer than the retries leaves the run resumable, and reap + resume
  finish it with nothing lost;
- a basic-auth server works with credentials and refuses the run without them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.integration.flow import runs
from tests.integration.test_resume import epochs_logged, tsp_process, wait_for
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.loopback_server import free_port, loopback_server

pytestmark = pytest.mark.integration

EPOCHS = 3
TRAIN = [
    "multimodal",
    "--epochs",
    str(EPOCHS),
    "--overrides",
    "representations=false trainer.batch_size=64 model.encoders.audio.width=8 "
    "model.encoders.image.width=8 trainer.checkpoint.min_interval_s=0",
]


def client_env(url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if name not in extra:
            env.pop(name, None)
    return env


def tsp_run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A hang in MLflow's default retries would take minutes: the timeout catches that.
    return subprocess.run(
        [sys.executable, "-m", "tsp_mlflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_every_epoch_once(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in run.data.metrics:
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        if key.startswith(("train/", "val/")) or key == schema.TIME_EPOCH:
            assert steps == list(range(1, EPOCHS + 1)), key
    assert any(k.startswith("test/") for k in run.data.metrics)


def test_an_unreachable_server_fails_at_once_with_the_fix(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = tsp_run(["pretrain", "--modality", "audio"], client_env(url))
    print(f"failed after {time.monotonic() - started:.1f} s")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tsp: error: cannot reach the tracking server at {url}")
    assert "start it" in last and "MLFLOW_TRACKING_URI" in last


def test_a_server_restarted_mid_run_gets_every_metric(tmp_path: Path) -> None:
    folder, port = tmp_path / "server", free_port()
    with loopback_server(folder, port=port, stop_signal=signal.SIGKILL) as url:
        client = MlflowClient(url)
        proc = tsp_process(TRAIN, client_env(url))
        run = wait_for("a run", lambda: runs(client, ""), proc)[0]  # type: ignore[index]
        run_id = run.info.run_id
        wait_for("the first epoch", lambda: epochs_logged(client, run_id), proc)
    # Killed: the run goes on training while its logging calls retry.
    time.sleep(2)
    assert proc.poll() is None
    with loopback_server(folder, port=port) as url:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
        assert_every_epoch_once(MlflowClient(url), run_id)


def test_a_long_outage_leaves_the_run_resumable_and_nothing_is_lost(tmp_path: Path) -> None:
    folder, port = tmp_path / "server", free_port()
    # One retry only: the outage outlasts it, as a long one would outlast the default ~8 min.
    impatient = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    with loopback_server(folder, port=port, stop_signal=signal.SIGKILL) as url:
        client = MlflowClient(url)
        proc = tsp_process(TRAIN, client_env(url, **impatient))
        run_id = wait_for("a run", lambda: runs(client, ""), proc)[0].info.run_id  # type: ignore[index]
        wait_for("the first epoch", lambda: epochs_logged(client, run_id), proc)
    assert proc.wait(timeout=300) == 1
    last = proc.stderr.read().strip().splitlines()[-1]  # type: ignore[union-attr]
    assert f"run {run_id} could not be closed and stays RUNNING" in last
    assert f"tsp runs reap, then rerun the same command with --resume {run_id}" in last

    with loopback_server(folder, port=port) as url:
        client = MlflowClient(url)
        assert client.get_run(run_id).info.status == "RUNNING"
        reaped = tsp_run(["runs", "reap"], client_env(url))
        assert reaped.returncode == 0, reaped.stderr[-2000:]
        assert f"KILLED {run_id}" in reaped.stdout and "marked 1 run(s) KILLED" in reaped.stdout
        assert client.get_run(run_id).info.status == "KILLED"
        resumed = tsp_run([*TRAIN, "--resume", run_id], client_env(url))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_every_epoch_once(client, run_id)


ADMIN, PASSWORD = "admin", "s3cret-Admin-pw-1"


def test_an_authenticated_server_takes_runs_with_credentials_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tsp server --auth` on PostgreSQL with two workers: users in the cluster's
    `mlflow_auth` database, one generated CSRF key shared by the workers, the admin
    password never written down; a run needs the right credentials."""
    from tsp_mlflow.tracking.lab_server import tracking_server

    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MLFLOW_FLASK_SERVER_SECRET_KEY", raising=False)
    folder = Path(tempfile.mkdtemp(prefix="tsp-auth-"))
    folder.chmod(0o711)  # under root PostgreSQL runs as `postgres`, who must reach it
    stack = contextlib.ExitStack()
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    served = stack.enter_context(
        tracking_server(folder, postgres_port=free_port(), port=free_port(), workers=2, auth=True)
    )
    with stack:
        url = served.url
        config = (folder / "basic_auth.ini").read_text()
        assert "mlflow_auth" in config and PASSWORD not in config
        assert (folder / "flask_secret_key").stat().st_mode & 0o077 == 0  # owner-only
        args = [
            "pretrain",
            "--modality",
            "audio",
            "--epochs",
            "1",
            "--overrides",
            "debug=tiny model.encoders.audio.width=4",
        ]
        anonymous = tsp_run(args, client_env(url))
        assert anonymous.returncode == 2
        assert (
            "requires authentication (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD" in anonymous.stderr.strip().splitlines()[-1]
        )
        wrong = tsp_run(
            args, client_env(url, MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD="not-it")
        )
        assert wrong.returncode == 2
        assert (
            "rejected the credentials of user 'admin' (HTTP 401); check "
            "MLFLOW_TRACKING_PASSWORD" in wrong.stderr.strip().splitlines()[-1]
        )

        creds = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
        done = tsp_run(args, client_env(url, **creds))
        assert done.returncode == 0, done.stderr[-3000:]
        os.environ.update(creds)  # this process reads the runs back as the admin
        try:
            client = MlflowClient(url)
            (run,) = runs(client, "")
            assert run.info.status == "FINISHED"
            assert client.get_registered_model("avdigits-audio-encoder").name
            import tsp_mlflow

            mlflow.set_tracking_uri(url)
            assert tsp_mlflow.load_encoder("models:/avdigits-audio-encoder@champion").out_dim == 64
            # The password is nowhere in what the run recorded.
            recorded = str(run.data.params) + str(run.data.tags)
            folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "a")))
            blobs = [p.read_bytes() for p in folder.rglob("*") if p.is_file()]
            assert PASSWORD not in recorded
            assert not any(PASSWORD.encode() in blob for blob in blobs)
            # Credentials in the URI itself: nothing printed shows them (MLflow's "View run
            # ... at http://admin:...@" line included), and a `pw` key is redacted.
            in_uri = url.replace("://", f"://{ADMIN}:{PASSWORD}@")
            shown = tsp_run(
                [
                    "pretrain",
                    "--modality",
                    "audio",
                    "--epochs",
                    "1",
                    "--overrides",
                    "debug=tiny model.encoders.audio.width=4 +tracking.pw=hunter2-pw",
                ],
                client_env(in_uri),
            )
            assert shown.returncode == 0, shown.stderr[-3000:]
            assert PASSWORD not in shown.stdout + shown.stderr
            latest = runs(client, "")[0]
            assert latest.data.params["tracking.pw"] == "***"
            config = Path(client.download_artifacts(latest.info.run_id, "config.yaml")).read_text()
            assert "hunter2-pw" not in config and PASSWORD not in config
        finally:
            for name in creds:
                os.environ.pop(name, None)
