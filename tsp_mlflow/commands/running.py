"""What every training command does around its recipe: join the other ranks, open the
tracking store, start or resume the run, and print its closing lines once."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import click


def start() -> str:
    from tsp_mlflow.tracking.session import configure_tracking
    from tsp_mlflow.training.distributed import init_distributed, main_first

    init_distributed()  # under torchrun: join the other ranks
    with main_first():
        return configure_tracking()


def echo(message: str) -> None:
    """A command's closing line, printed once under torchrun (by rank 0)."""
    from tsp_mlflow.training.distributed import is_main_process

    if is_main_process():
        click.echo(message)


def mark_project_run_as_resuming(run_id: str) -> None:
    """Under `mlflow run`, the project run MLflow created only launches the resume: say so
    on it, so the UI points to the run that was continued. It is then let go (MLflow
    would otherwise take it for the first nested run we start)."""
    pending = os.environ.pop("MLFLOW_RUN_ID", None)
    if pending and pending != run_id:
        from mlflow import MlflowClient

        from tsp_mlflow.tracking import schema

        client = MlflowClient()
        client.set_tag(pending, schema.RESUMES, run_id)
        client.set_tag(
            pending, "mlflow.note.content", f"Resumed run {run_id}; its metrics are there."
        )


def run_or_resume(recipe: Any, resume: str, experiment: str) -> str:
    """Run a training recipe: anew in ``experiment``, or continuing run ``resume`` (whose
    experiment is fixed already)."""
    from tsp_mlflow.tracking.session import use_experiment
    from tsp_mlflow.training.distributed import is_main_process

    if resume and is_main_process():  # rank 0 alone: it claims the run for every rank
        recipe.check_resume(resume)  # fails fast; run() checks again just before reopening
        mark_project_run_as_resuming(resume)
    elif is_main_process():  # under torchrun the other ranks open no run
        use_experiment(experiment, when_a_run_starts=True)
    return str(recipe.run(resume=resume or None))


def print_plan(plan: Any, recipe: Any, resume: str) -> None:
    """``--dry-run`` of one training run: a resumed run's settings are checked too."""
    if resume:
        recipe.check_resume(resume)
    echo(plan(recipe) + (f"\n  resumes     run {resume}" if resume else ""))


def registry_summary(
    dataset: str, modality: str, run_id: str, objective: str = "supervised"
) -> str:
    """Which version this run registered and where ``@champion`` stands now."""
    from mlflow import MlflowClient

    from tsp_mlflow.tracking import schema

    client = MlflowClient()
    name = schema.registered_encoder_name(dataset, modality, objective)
    (mine,) = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    champion = client.get_model_version_by_alias(name, schema.CHAMPION_ALIAS)
    monitor = champion.tags.get(schema.MODEL_VERSION_MONITOR, "?")
    value = champion.tags.get(schema.MODEL_VERSION_MONITOR_VALUE, "?")
    standing = (
        "it is @champion"
        if champion.version == mine.version
        else f"@champion stays on version {champion.version}"
    )
    return (
        f"registered {name} version {mine.version}; {standing} "
        f"({monitor} = {value}; models:/{name}/{mine.version} selects this one)"
    )


def stop_on_signals(*signums: int) -> None:
    """A service manager's SIGTERM (or a closed terminal's SIGHUP) stops a server command
    the way Ctrl-C does: through ``KeyboardInterrupt``, so its context managers clean up."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in signums:
        signal.signal(signum, stop)
    # Ctrl-C must stop a server command whatever it inherited: a parent's ignored SIGINT
    # (kept across exec) or a blocked one (the signal mask is inherited too) would leave
    # Ctrl-C a no-op, and the server running.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, *signums})


def wait_until_interrupted() -> None:
    """Block while a server serves; Ctrl-C or a stop signal ends the wait."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping")
