"""The search commands: ``tsp sweep`` and ``tsp sensitivity`` on a sweep's trials."""

from __future__ import annotations

import os
from pathlib import Path

import click

from tsp_mlflow.commands.parameters import (
    EPOCHS_HELP,
    OVERRIDES_HELP,
    check_dataset_choice,
    optional_int,
)
from tsp_mlflow.commands.running import start
from tsp_mlflow.run_flags import ON_TRAINING_RUNS, flags, run_flags
from tsp_mlflow.tracking.session import where_to_look


@click.command()
@run_flags(*ON_TRAINING_RUNS)
@click.option("--dataset", default="avdigits", show_default=True)
@click.option(
    "--trials", default="", help="trials per condition over all workers; empty: sweep.n_trials"
)
@click.option(
    "--study",
    default="",
    help="the study's name; the same name joins or resumes it (empty: <dataset>-<sweep option>)",
)
@click.option(
    "--storage",
    default="",
    help="Optuna RDB URL the workers share (empty: $TSP_SWEEP_STORAGE, else optuna.db beside mlflow.db)",
)
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--overrides", default="", help=OVERRIDES_HELP + "; sweep syntax adds a dimension")
def sweep(dataset: str, trials: str, study: str, storage: str, epochs: str, overrides: str) -> None:
    """Optuna search over a conf/sweep/ space; every trial a run nested under one parent.

    \b
    Examples:
      tsp sweep --trials 20                                   # TPE + median pruning
      tsp sweep --trials 30 --overrides "sweep.conditions=[pretrained]"
      tsp sweep --overrides "optim.lr='tag(log, interval(1e-5, 1e-1))' model/fusion=gated"
      tsp sweep --overrides "sweep=sensitivity" --epochs 5    # lr x batch, scratch vs pretrained
      tsp sweep --overrides "sweep=pretrain modality=audio"   # tune one encoder's pretraining
      TSP_SWEEP_STORAGE=postgresql+psycopg2://me@db/optuna tsp sweep --study big   # each worker
      tsp sweep --trials 20 --dry-run                         # the study and space, no trial
    """
    from tsp_mlflow.config import split_overrides
    from tsp_mlflow.recipes.sweep import SweepRecipe
    from tsp_mlflow.tracking.session import use_experiment

    check_dataset_choice(dataset)
    given = flags("sweep", supported=ON_TRAINING_RUNS)
    uri = start()  # pretrained conditions resolve encoder runs against the tracking store
    recipe = SweepRecipe(
        dataset,
        optional_int("epochs", epochs),
        [*given.overrides(), *split_overrides(overrides)],
        n_trials=optional_int("trials", trials),
        study=study or None,
        storage=storage or None,
    )
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_sweep

        click.echo(plan_sweep(recipe))
        return
    use_experiment(recipe.cfg.tracking.experiment)
    result = recipe.run()
    click.echo("")
    for arm, best in result.best.items():
        if best is None:
            click.echo(f"{arm}: no complete trial yet")
            continue
        shown = " ".join(f"{k}={v}" for k, v in best.params.items())
        click.echo(
            f"{arm}: best {best.value:.4g} ({recipe.direction}) at trial {best.number}: {shown}"
        )
    state = "finished" if result.finished else "still running on other workers"
    click.echo(f"sweep run {result.run_id} ({state}); artifacts under sweep/ on that run")
    click.echo(where_to_look(uri))


@click.command("sensitivity")
@run_flags("dry_run")
@click.argument("sweep_run")
@click.option(
    "--metric", default="", help="a metric of the trial runs; empty: best/value (the objective)"
)
@click.option(
    "--reference", default="", help="the condition others are compared with (empty: scratch)"
)
@click.option("--confidence", type=float, default=0.95, show_default=True)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=0,
    show_default=True,
    help="RNG seed for bootstraps",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="also write the report, values and figures into this folder",
)
@click.option("--no-log", is_flag=True, help="print only; log nothing to the sweep run")
def sensitivity_command(
    sweep_run: str,
    metric: str,
    reference: str,
    confidence: float,
    seed: int,
    output: Path | None,
    no_log: bool,
) -> None:
    """How sensitive is each condition to its hyperparameters? From a sweep's trials.

    \b
    Examples:
      tsp sensitivity <sweep run id>
      tsp sensitivity <sweep run id> --metric test/audio-image/accuracy --no-log --output report/
      tsp sensitivity <sweep run id> --dry-run     # = --no-log: print the report only
    """
    import tempfile

    import mlflow

    from analysis.sensitivity import sensitivity_report
    from tsp_mlflow.tracking import schema
    from tsp_mlflow.tracking.session import tracked_run

    no_log = flags("sensitivity", supported=("dry_run",)).dry_run or no_log
    uri = start()
    settings = dict(
        metric=metric or None, reference=reference or None, confidence=confidence, seed=seed
    )
    if no_log or not os.environ.get("MLFLOW_RUN_ID"):
        report = sensitivity_report(sweep_run, **settings, folder=output, log=not no_log)
    else:  # under `mlflow run`: its run holds the report, nested under the sweep
        tags = {schema.STAGE: schema.STAGE_ANALYSIS, schema.PARENT_RUN_ID: sweep_run}
        with tracked_run(run_name="sensitivity", tags=tags), tempfile.TemporaryDirectory() as tmp:
            report = sensitivity_report(sweep_run, **settings, folder=output or Path(tmp))
            mlflow.log_artifacts(str(report.folder), schema.SENSITIVITY_DIR)
    click.echo(report.markdown)
    if output:
        click.echo(f"report written to {output}")
    click.echo(where_to_look(uri))
