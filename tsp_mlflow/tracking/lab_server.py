"""``tsp server``: an MLflow tracking server for a lab, in one command.

A PostgreSQL backend store (a private cluster in a folder, or the lab's own server), artifacts
proxied by the server into ``--artifacts-destination`` (clients need no storage credentials),
several workers (PostgreSQL takes concurrent writers, unlike sqlite), and optionally MLflow's
basic-auth app. The same cluster holds an ``optuna`` database for distributed sweeps.
docs/deploy.md is the long form.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking.loopback_server import loopback_server
from tsp_mlflow.tracking.params import redact_uri
from tsp_mlflow.tracking.postgres import private_postgres

DATABASES = ("mlflow", "optuna", "mlflow_auth")
# Per worker and per store (tracking, registry, and with --auth users: three engines), so at
# most 8 x 3 x 10 = 240 connections, within the private cluster's max_connections=300.
POOL_SIZE, MAX_OVERFLOW = 5, 5
MAX_WORKERS = 8


@dataclass(frozen=True)
class Served:
    """What clients need: the tracking URL and, with a private cluster, the sweep storage."""

    url: str
    backend: str  # credentials redacted
    store: str  # the backend store URI itself (for this process; never printed)
    artifacts: Path
    optuna_storage: str | None


def default_workers() -> int:
    """One uvicorn worker per core, at most 8 (each holds a DB pool and ~250 MB)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def check_server_settings(backend_store_uri: str | None, workers: int | None, auth: bool) -> int:
    """What ``tsp server`` refuses before starting anything; returns the worker count."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {workers}")
    if backend_store_uri and backend_store_uri.startswith("postgresql://"):
        raise UserInputError(
            "--backend-store-uri postgresql://... means psycopg 3 to SQLAlchemy 2; write "
            "postgresql+psycopg2://... (installed with the [postgres] extra), or install "
            "psycopg[binary] and write postgresql+psycopg://..."
        )
    if auth and not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise UserInputError(
            "--auth needs the admin's password in MLFLOW_AUTH_ADMIN_PASSWORD (and optionally "
            "MLFLOW_AUTH_ADMIN_USERNAME, default admin); it is used only when the user store "
            "is first created"
        )
    if auth and len(os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]) < 12:
        raise UserInputError("MLFLOW_AUTH_ADMIN_PASSWORD: MLflow requires at least 12 characters")
    driver = "psycopg" if "+psycopg://" in (backend_store_uri or "") else "psycopg2"
    if (not backend_store_uri or backend_store_uri.startswith("postgresql")) and (
        importlib.util.find_spec(driver) is None
    ):
        raise UserInputError(
            f"tsp server keeps its runs in PostgreSQL, whose driver {driver} is not installed: "
            "pip install -e '.[postgres]' (psycopg2-binary), or `make setup`"
        )
    return workers


@contextlib.contextmanager
def tracking_server(
    folder: Path,
    *,
    backend_store_uri: str | None = None,
    postgres_port: int = 5433,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int | None = None,
    auth: bool = False,
    allowed_hosts: str | None = None,
) -> Iterator[Served]:
    """Start PostgreSQL (unless ``backend_store_uri`` names a store) and ``mlflow server``
    on it; yield what clients need; stop both on exit (the data stays in ``folder``)."""
    workers = check_server_settings(backend_store_uri, workers, auth)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(MAX_OVERFLOW),
        "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": "3600",  # outlive a DB-side idle timeout
    }
    with contextlib.ExitStack() as stack:
        optuna = users = None
        store = backend_store_uri
        if store is None:
            cluster = stack.enter_context(
                private_postgres(folder / "postgres", postgres_port, DATABASES)
            )
            store, optuna = cluster.url("mlflow"), cluster.url("optuna")
            users = cluster.url("mlflow_auth")
        if auth:
            env.update(_auth_env(folder, users or f"sqlite:///{folder / 'basic_auth.db'}"))
        hosts = allowed_hosts or default_allowed_hosts(host)
        url = stack.enter_context(
            loopback_server(
                folder,
                extra_args=["--allowed-hosts", hosts] if hosts else [],
                workers=workers,
                port=port,
                host=host,
                backend_store_uri=store,
                app_name="basic-auth" if auth else None,
                env=env,
                timeout_s=180.0,  # a first start migrates an empty database
            )
        )
        yield Served(url, redact_uri(store), store, folder / "server-artifacts", optuna)


def default_allowed_hosts(host: str) -> str | None:
    """MLflow answers only Host headers it allows (localhost and private IPs by default).
    Serving beyond loopback, also allow this machine's names, so that clients can use
    ``http://<hostname>:<port>``; None keeps MLflow's default."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return None
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {socket.gethostname(), socket.getfqdn()}
    return ",".join(
        [*get_default_allowed_hosts(), *sorted(names), *(f"{n}:*" for n in sorted(names))]
    )


def _auth_env(folder: Path, users: str) -> dict[str, str]:
    """MLflow's basic-auth app: its users live in the ``mlflow_auth`` database of a private
    cluster (else beside the server, in ``folder/basic_auth.db``). The admin's password comes
    from ``MLFLOW_AUTH_ADMIN_PASSWORD`` and is never written to a file."""
    config = folder / "basic_auth.ini"
    # The CSRF key must be the same in every worker and survive restarts: the user's, or
    # one generated once and kept (owner-only) in the folder.
    key = os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
    if not key:
        stored = folder / "flask_secret_key"
        if not stored.exists():  # written whole or not at all, owner-only from the start
            partial = folder / "flask_secret_key.tmp"
            partial.unlink(missing_ok=True)
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
            partial.replace(stored)
        key = stored.read_text().strip()
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {users}\n"
        f"admin_username = {os.environ.get('MLFLOW_AUTH_ADMIN_USERNAME', 'admin')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": key}
