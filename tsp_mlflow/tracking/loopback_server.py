"""A real ``mlflow server`` subprocess on loopback, for tests, benchmarks and local use."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tsp_mlflow.errors import UserInputError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def loopback_server(
    folder: Path,
    *,
    workers: int = 1,
    timeout_s: float = 90.0,
    port: int | None = None,
    app_name: str | None = None,
    env: dict[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
    backend_store_uri: str | None = None,
    host: str = "127.0.0.1",
    extra_args: list[str] | None = None,
    command: str = "server",
) -> Iterator[str]:
    """Start ``mlflow server`` with artifact proxying into ``folder/server-artifacts`` and
    a backend store (``backend_store_uri``, e.g. PostgreSQL; default a sqlite file in
    ``folder``); yield its URL; stop its whole process group on exit (``stop_signal``).

    One worker with job execution disabled takes 2 processes and ~0.5 GiB and answers in a
    few ms (the defaults start 15 processes); see docs/decisions.md. The same ``folder``
    and ``port`` restart the same server; ``app_name="basic-auth"`` turns on MLflow's
    authentication (its admin from ``MLFLOW_AUTH_ADMIN_USERNAME``/``_PASSWORD`` in ``env``).
    ``command="ui"`` runs ``mlflow ui``, the same server under its browsing name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if not _port_is_free(host, port):  # else /health could answer for another server
        raise UserInputError(f"port {port} is in use on {host}; choose another --port")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = folder / "server.log"
    app = ["--app-name", app_name] if app_name else []
    store = backend_store_uri or f"sqlite:///{folder / 'server.db'}"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                command,
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--backend-store-uri",
                store,
                "--artifacts-destination",
                str(folder / "server-artifacts"),
                *app,
                *(extra_args or []),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=folder,
        )
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have died on its own
                os.killpg(proc.pid, stop_signal)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _port_is_free(host: str, port: int) -> bool:
    """Nothing listens there. SO_REUSEADDR, as uvicorn binds: connections of a server
    stopped a moment ago (TIME_WAIT) do not make the port busy."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
