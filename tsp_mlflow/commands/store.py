"""The store commands: ``tsp data check``, ``tsp runs`` (and ``runs reap``), ``tsp server``
and ``tsp ui``."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import click

from tsp_mlflow.commands.parameters import OVERRIDES_HELP, check_dataset_choice
from tsp_mlflow.commands.running import start, stop_on_signals, wait_until_interrupted
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.run_flags import flags, run_flags
from tsp_mlflow.tracking.schema import STAGES


@click.group()
def data() -> None:
    """Inspect datasets."""


@data.command("check")
@click.argument("dataset")
@click.argument("root", required=False)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
def data_check(dataset: str, root: str | None, overrides: str) -> None:
    """Validate DATASET's files under ROOT: layout, rows, shapes, label balance, digests.

    \b
    Examples:
      tsp data check avmnist /data/avmnist
      tsp data check mmimdb /data/mmimdb/multimodal_imdb.hdf5
      tsp data check mosi_mmsa /data/MOSI/aligned_50.pkl
      tsp data check avdigits
    """
    from tsp_mlflow.config import split_overrides
    from tsp_mlflow.recipes.data_check import check_dataset

    flags("data check", supported=("dry_run",))  # it only reads: a dry run is the same
    check_dataset_choice(dataset)
    click.echo(check_dataset(dataset, root, split_overrides(overrides)))


@click.group(invoke_without_command=True)
@click.option(
    "--experiment",
    "experiments",
    multiple=True,
    help="an experiment name or id (repeatable); default: every active experiment",
)
@click.option("--stage", type=click.Choice(STAGES), default=None, help="only runs of this stage")
@click.option("--parent-run", default="", help="only this run's children (a pipeline's, a sweep's)")
@click.option("--condition", default="", help="only fusion runs of this condition, e.g. pretrained")
@click.option(
    "--status", type=click.Choice(["RUNNING", "FINISHED", "FAILED", "KILLED"]), default=None
)
@click.option(
    "--filter",
    "filter_string",
    default="",
    help="an MLflow search filter ANDed to the rest, e.g. 'tags.`tsp.fusion` = \"gated\"'",
)
@click.option("--max-results", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option(
    "--ids",
    "-q",
    "ids_only",
    is_flag=True,
    help="print the run ids alone, one per line (for scripts: $(tsp runs -q ...))",
)
@click.pass_context
def runs(
    ctx: click.Context,
    experiments: tuple[str, ...],
    stage: str | None,
    parent_run: str,
    condition: str,
    status: str | None,
    filter_string: str,
    max_results: int,
    ids_only: bool,
) -> None:
    """List pipelines, encoders and fusion runs as a table (newest first); inspect and
    repair runs in the tracking store.

    \b
    Examples:
      tsp runs
      tsp runs --stage pipeline
      tsp runs --stage multimodal --condition pretrained --status FINISHED
      tsp runs --parent-run <pipeline run id>
      tsp runs --stage pipeline --max-results 1 --ids     # the newest pipeline's id
      tsp runs --filter 'tags.`tsp.fusion` = "concat"' --max-results 10
      tsp runs reap --dry-run
    """
    if ctx.invoked_subcommand is not None:
        return
    from tsp_mlflow.tracking.listing import list_runs, runs_table

    flags("runs", supported=())
    uri = start()
    found = list_runs(
        experiments,
        stage=stage,
        parent_run=parent_run or None,
        condition=condition or None,
        status=status,
        filter_string=filter_string,
        max_results=max_results,
    )
    if ids_only:
        click.echo("\n".join(r.info.run_id for r in found) or None, nl=bool(found))
        return
    runs_table(found, uri)


@runs.command("reap")
@click.option(
    "--experiment",
    "experiments",
    multiple=True,
    help="an experiment name (repeatable); default: every active experiment",
)
@click.option(
    "--stale-after",
    type=float,
    default=None,
    help="seconds without a heartbeat after which a run on another host counts as "
    "dead (default 300); runs on this host are checked by their process",
)
@click.option("--dry-run", is_flag=True, help="list the dead runs, change nothing")
def runs_reap(experiments: tuple[str, ...], stale_after: float | None, dry_run: bool) -> None:
    """Mark runs left RUNNING by a dead process (SIGKILL, out of memory, a lost machine)
    as KILLED, with the reason in tsp.error. Resume them with --resume <run id>.

    \b
    Examples:
      tsp runs reap
      tsp runs reap --experiment avdigits --dry-run
      tsp runs reap --stale-after 120
    """
    from mlflow import MlflowClient

    from tsp_mlflow.tracking import schema
    from tsp_mlflow.tracking.liveness import STALE_AFTER_SECONDS, reap, resume_hint

    dry_run = flags("runs reap", supported=("dry_run",)).dry_run or dry_run
    start()
    ids = None
    if experiments:
        ids = []
        for name in experiments:
            found = MlflowClient().get_experiment_by_name(name)
            if found is None:
                raise UserInputError(f"experiment={name!r} not found in this tracking store")
            ids.append(found.experiment_id)
    if stale_after is not None and not (math.isfinite(stale_after) and stale_after >= 0):
        raise UserInputError(
            f"--stale-after must be a number of seconds >= 0, got {stale_after}; e.g. "
            "--stale-after 120"
        )
    dead = reap(
        ids,
        stale_after=STALE_AFTER_SECONDS if stale_after is None else stale_after,
        dry_run=dry_run,
    )
    for d in dead:
        stage = d.run.data.tags.get(schema.STAGE, "?")
        click.echo(
            f"{'dead' if dry_run else 'KILLED'} {d.run.info.run_id} ({d.run.info.run_name}, "
            f"{stage}): {d.reason}; {resume_hint(d.run)}"
        )
    verb = "would mark" if dry_run else "marked"
    click.echo(f"{verb} {len(dead)} run(s) KILLED")


@click.command("server")
@run_flags("dry_run")
@click.option(
    "--folder",
    default="tsp-server",
    show_default=True,
    help="where the private PostgreSQL cluster and the artifacts live",
)
@click.option(
    "--backend-store-uri",
    default="",
    help="an existing store, e.g. postgresql+psycopg2://mlflow@db/mlflow (password "
    "via PGPASSWORD or ~/.pgpass); empty: a private PostgreSQL in --folder",
)
@click.option("--postgres-port", type=int, default=5433, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="0.0.0.0 serves the lab's network (then use --auth)",
)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option(
    "--workers", type=int, default=None, help="uvicorn workers (default: one per core, at most 8)"
)
@click.option(
    "--allowed-hosts",
    default="",
    help="Host headers MLflow answers, comma-separated (default: MLflow's, plus this "
    "machine's names when --host is not loopback)",
)
@click.option(
    "--auth",
    is_flag=True,
    help="MLflow basic-auth; the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD",
)
def server_command(
    folder: str,
    backend_store_uri: str,
    postgres_port: int,
    host: str,
    port: int,
    workers: int | None,
    allowed_hosts: str,
    auth: bool,
) -> None:
    """Start a tracking server on PostgreSQL with proxied artifacts; Ctrl-C stops it.

    \b
    Examples:
      tsp server                                   # private PostgreSQL in ./tsp-server
      MLFLOW_AUTH_ADMIN_PASSWORD=... tsp server --host 0.0.0.0 --auth
      tsp server --backend-store-uri postgresql+psycopg2://mlflow@db.lab/mlflow --dry-run
      tsp server --port 5001 --workers 2 --dry-run     # check the settings, start nothing
    Then, on each client:
      export MLFLOW_TRACKING_URI=http://<host>:5000
      tsp pipeline ...
    """
    from tsp_mlflow.tracking.lab_server import check_server_settings, tracking_server
    from tsp_mlflow.tracking.params import redact_uri
    from tsp_mlflow.tracking.postgres import server_bindir

    if flags("server", supported=("dry_run",)).dry_run:
        n = check_server_settings(backend_store_uri or None, workers, auth)
        where = Path(folder).resolve()
        backend = (
            redact_uri(backend_store_uri)
            if backend_store_uri
            else f"a private PostgreSQL in {where / 'postgres'} on port {postgres_port} "
            f"({'exists' if (where / 'postgres').exists() else 'would be created'}; "
            f"binaries in {server_bindir()})"
        )
        click.echo(
            f"would start: mlflow server at http://{host}:{port} with {n} worker(s)"
            f"{', basic-auth' if auth else ''}\n  backend    {backend}\n"
            f"  artifacts  proxied into {where / 'server-artifacts'}"
        )
        return

    stop_on_signals(signal.SIGTERM, signal.SIGHUP)  # a service manager; a closed terminal
    with tracking_server(
        Path(folder),
        backend_store_uri=backend_store_uri or None,
        postgres_port=postgres_port,
        host=host,
        port=port,
        workers=workers,
        auth=auth,
        allowed_hosts=allowed_hosts or None,
    ) as served:
        click.echo(
            f"MLflow tracking server at {served.url} (backend {served.backend}; "
            f"artifacts proxied into {served.artifacts})"
        )
        click.echo(f"  clients:  export MLFLOW_TRACKING_URI={served.url}")
        if auth:
            click.echo(
                "            export MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=..."
            )
        if served.optuna_storage:
            click.echo(f"  sweeps:   tsp sweep --storage '{served.optuna_storage}' ...")
        click.echo("Ctrl-C stops the server and its database; the data stays.", nl=True)
        wait_until_interrupted()


@click.command("ui")
@run_flags("dry_run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option(
    "--backend-store-uri",
    default="",
    help="the store to browse (default: MLFLOW_TRACKING_URI, else ./mlflow.db)",
)
def ui_command(host: str, port: int, backend_store_uri: str) -> None:
    """Start `mlflow ui` on the project's tracking store and print its URL; Ctrl-C stops it.

    \b
    Examples:
      tsp ui
      tsp ui --port 5001
      tsp ui --backend-store-uri sqlite:///results/mlflow.db
      tsp ui --dry-run                # print the store and URL, start nothing
    """
    from tsp_mlflow.tracking.loopback_server import loopback_server
    from tsp_mlflow.tracking.params import redact_uri
    from tsp_mlflow.tracking.session import configure_tracking

    dry_run = flags("ui", supported=("dry_run",)).dry_run
    if backend_store_uri:
        os.environ["MLFLOW_TRACKING_URI"] = backend_store_uri
    uri = configure_tracking(prepare_store=False)
    if uri.startswith(("http://", "https://")):
        click.echo(f"The tracking store is a server already: open {redact_uri(uri)}")
        return
    if dry_run:
        click.echo(
            f"would start: mlflow ui --backend-store-uri {redact_uri(uri)} --host {host} "
            f"--port {port}\nthen open http://{host}:{port}"
        )
        return

    stop_on_signals(signal.SIGTERM)
    # Its log (and artifacts of runs logged through it) beside a sqlite store, else here.
    near = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path()
    with loopback_server(
        near / ".tsp-ui", backend_store_uri=uri, host=host, port=port, command="ui"
    ) as url:
        click.echo(f"MLflow UI on {redact_uri(uri)}: open {url}  (Ctrl-C stops it)")
        wait_until_interrupted()
