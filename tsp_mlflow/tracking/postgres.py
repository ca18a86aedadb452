"""A private PostgreSQL cluster for local use and tests: ``initdb`` into a folder,
``pg_ctl`` start with a Unix socket only (no TCP), one database per store.

A lab's real server is set up by its admins (docs/deploy.md); this is the one-command way
to get the same engine on one machine: ``tsp server`` runs MLflow on it and the sweeps'
Optuna storage can share it. The server binaries come from the distribution's PostgreSQL
packages (Debian/Ubuntu: ``postgresql``; found through ``pg_config --bindir`` or under
``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so under root
the cluster runs as the ``postgres`` system user and its folder is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tsp_mlflow.errors import UserInputError

USER = "tsp"  # the cluster's superuser; trust authentication, over an owner-only socket
MAX_CONNECTIONS = 300  # tsp server's workers hold three pools each (tracking, registry, auth)


def server_bindir() -> Path:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb") or "").resolve().parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise UserInputError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found; install them (Debian/Ubuntu: "
        "apt install postgresql) or give an existing server with --backend-store-uri"
    )


@dataclass
class PostgresCluster:
    """A cluster in ``folder`` (created on first start, reused afterwards) on ``port``."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def sockets(self) -> Path:
        return self.folder / "run"

    def url(self, database: str, driver: str = "psycopg2") -> str:
        """An SQLAlchemy URL for ``database`` over the cluster's Unix socket (``driver``:
        psycopg2, or psycopg for v3)."""
        return f"postgresql+{driver}://{USER}@/{database}?host={self.sockets}&port={self.port}"

    def start(self) -> None:
        """``initdb`` if the folder holds no cluster yet, then ``pg_ctl start``."""
        bindir = server_bindir()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(mode=0o700, exist_ok=True)
        if _as_root():
            _hand_over(self.folder)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    USER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            )
        # No TCP at all, and a socket only its owner may open: the superuser trusts local
        # connections, so no other user of the machine may make one.
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses='' "
            f"-c unix_socket_permissions=0700 -c max_connections={MAX_CONNECTIONS}"
        )
        self._run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.folder / "postgres.log"),
                "-w",
                "start",
            ]
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running: nothing to do
            self._run(
                [str(server_bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            )

    def create_database(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                connection = psycopg2.connect(
                    host=str(self.sockets), port=self.port, user=USER, dbname="postgres"
                )
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def _run(self, cmd: list[str]) -> None:
        if _as_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            log = self.folder / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise subprocess.CalledProcessError(
                done.returncode, cmd, output=done.stdout, stderr=f"{done.stderr}\n{tail}"
            )


@contextlib.contextmanager
def private_postgres(
    folder: Path, port: int, databases: tuple[str, ...]
) -> Iterator[PostgresCluster]:
    """A started cluster with ``databases``; stopped (data kept) on exit."""
    cluster = PostgresCluster(folder, port)
    try:
        cluster.start()
    except (KeyboardInterrupt, SystemExit):
        cluster.stop()  # it may have started just before the interruption
        raise
    except subprocess.CalledProcessError as err:  # e.g. this folder's cluster runs already
        raise UserInputError(
            f"PostgreSQL in {folder} did not start on port {port}: "
            f"{(err.stderr or '').strip().splitlines()[-1:] or err}; is a cluster of that "
            "folder still running (pg_ctl status -D <folder>/postgres/data)?"
        ) from None
    try:
        for name in databases:
            cluster.create_database(name)
        yield cluster
    finally:
        cluster.stop()


def _as_root() -> bool:
    return os.geteuid() == 0


def _hand_over(folder: Path) -> None:
    """Give the cluster's folder to the ``postgres`` user, who must be able to reach it."""
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise UserInputError(
            "PostgreSQL refuses to run as root and there is no 'postgres' user; run as an "
            "ordinary user, or create that user"
        ) from None
    for parent in folder.resolve().parents:  # we change no permissions but the folder's own
        if not parent.stat().st_mode & 0o001:
            raise UserInputError(
                f"PostgreSQL refuses to run as root, and the 'postgres' user it then runs as "
                f"cannot reach {folder} ({parent} is closed to other users); put the cluster "
                "under a folder others can traverse, e.g. tsp server --folder /tmp/tsp-server"
            )
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
