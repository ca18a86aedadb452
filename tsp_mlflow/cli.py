"""``tsp <command>`` and ``python -m tsp_mlflow <command>``: the MLproject entry points.

Each command parses its parameters, composes and validates the config, then runs its
recipe. Parameter names are a public contract shared with ``MLproject``.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from tsp_mlflow.errors import UserInputError

EPOCHS_HELP = "epochs (positive integer); empty keeps the config's trainer.epochs"
OVERRIDES_HELP = "Hydra overrides, space-separated, e.g. 'optim.lr=1e-3 debug=tiny'"


def _optional_int(name: str, text: str | None) -> int | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UserInputError(f"{name} must be an integer, got {text!r}") from None
    if value <= 0:
        raise UserInputError(f"{name} must be a positive integer, got {value}; e.g. -P {name}=10")
    return value


def _stage_overrides(dataset: str, epochs: str | None, overrides: str, *params: str) -> list[str]:
    """Entry-point parameters as Hydra overrides; the user's ``overrides`` come last and win."""
    from tsp_mlflow.config import split_overrides

    n = _optional_int("epochs", epochs)
    return [
        f"data={dataset}",
        *params,
        *([f"trainer.epochs={n}"] if n else []),
        *split_overrides(overrides),
    ]


def _check_dataset(dataset: str) -> None:
    from tsp_mlflow.config import group_options

    options = group_options("data")
    if dataset not in options:
        raise UserInputError(
            f"unknown dataset {dataset!r} (-P dataset); choose one of {', '.join(options)}"
        )


def _start() -> str:
    from tsp_mlflow.tracking.session import configure_tracking

    return configure_tracking()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """tsp-mlflow: does task-specific pretraining of each encoder help late fusion?"""


@cli.command()
@click.option("--dataset", default="avdigits", show_default=True)
@click.option("--modality", required=True, help="which modality's encoder to pretrain")
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
def pretrain(dataset: str, modality: str, epochs: str, seed: int, overrides: str) -> None:
    """Pretrain one modality's encoder and register it as <dataset>-<modality>-encoder."""
    from tsp_mlflow.config import compose_config, quote
    from tsp_mlflow.recipes.pretrain import PretrainRecipe
    from tsp_mlflow.tracking.session import use_experiment

    _check_dataset(dataset)
    stage = _stage_overrides(
        dataset, epochs, overrides, f"modality={quote(modality)}", f"seed={seed}"
    )
    cfg, _ = compose_config("pretrain", stage)
    recipe = PretrainRecipe(cfg)
    _start()
    use_experiment(cfg.tracking.experiment)
    run_id = recipe.run()
    click.echo(
        f"pretrain run {run_id} finished; encoder registered as {cfg.data.name}-{modality}-encoder"
    )


@cli.command()
@click.option("--dataset", default="avdigits", show_default=True)
@click.option("--encoders", default="scratch", show_default=True,
              help="scratch | pretrained | <modality>=<scratch|pretrained|URI>,...")  # fmt: skip
@click.option("--fusion", default="concat", show_default=True)
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
def multimodal(
    dataset: str, encoders: str, fusion: str, epochs: str, seed: int, overrides: str
) -> None:
    """Train a late-fusion model and evaluate every modality pattern."""
    from tsp_mlflow.config import compose_config, group_options, quote
    from tsp_mlflow.recipes.multimodal import MultimodalRecipe
    from tsp_mlflow.tracking.session import use_experiment

    _check_dataset(dataset)
    if fusion not in group_options("model/fusion"):
        raise UserInputError(
            f"unknown fusion {fusion!r} (-P fusion); choose one of {', '.join(group_options('model/fusion'))}"
        )
    params = (f"model/fusion={fusion}", f"encoders={quote(encoders)}", f"seed={seed}")
    stage = _stage_overrides(dataset, epochs, overrides, *params)
    _start()  # encoder URIs are resolved against the tracking server while validating
    cfg, choices = compose_config("multimodal", stage)
    recipe = MultimodalRecipe(cfg, fusion_name=choices["model/fusion"])
    use_experiment(cfg.tracking.experiment)
    run_id = recipe.run()
    click.echo(f"multimodal run {run_id} finished (condition {recipe.condition})")


@cli.command()
@click.option("--dataset", default="avdigits", show_default=True)
@click.option("--seeds", type=int, default=5, show_default=True, help="fusion runs per condition")
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
def pipeline(dataset: str, seeds: int, epochs: str, overrides: str) -> None:
    """Pretrain, train scratch and pretrained fusion models over seeds, then analyse."""
    from tsp_mlflow.config import split_overrides
    from tsp_mlflow.recipes.pipeline import PipelineRecipe
    from tsp_mlflow.tracking.session import use_experiment

    _check_dataset(dataset)
    uri = _start()
    recipe = PipelineRecipe(
        dataset, seeds, _optional_int("epochs", epochs), split_overrides(overrides)
    )
    use_experiment(recipe.cfg.tracking.experiment)
    result = recipe.run()
    click.echo("")
    click.echo(f"Pretrained vs scratch on {dataset} (pipeline run {result.run_id}):")
    click.echo(result.analysis.markdown)
    click.echo(where_to_look(uri))


@cli.command("analyze")
@click.option("--experiment", default="avdigits", show_default=True, help="experiment name or id")
@click.option("--parent-run", "--parent_run", "parent_run", default="", help="pipeline run id")
@click.option("--metric", default="accuracy", show_default=True)
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
def analyze_command(experiment: str, parent_run: str, metric: str, split: str) -> None:
    """Compare pretrained with scratch fusion runs per modality pattern, paired by seed."""
    from analysis.analyze import analyze

    uri = _start()  # no use_experiment here: analysing must never create an experiment
    result = analyze(
        experiment=experiment or None, parent_run=parent_run or None, metric=metric, split=split
    )
    click.echo(result.markdown)
    click.echo(f"analysis run {result.run_id}")
    click.echo(where_to_look(uri))


def where_to_look(uri: str) -> str:
    from tsp_mlflow.tracking.params import redact_uri

    uri = redact_uri(uri)
    if uri.startswith("sqlite:///"):
        return (
            f"Tracking store: {uri}\n"
            f"Browse the runs:  mlflow ui --backend-store-uri {uri}   (then open http://127.0.0.1:5000)"
        )
    if uri.startswith(("http://", "https://")):
        return f"Tracking server: {uri} (open it in a browser)"
    return f"Tracking store: {uri}\nBrowse the runs:  mlflow ui --backend-store-uri {uri}"


def main(argv: list[str] | None = None) -> None:
    """Run a command. Errors print one line (exit 2 for bad input, 1 otherwise) and end the
    `mlflow run` project run FAILED with the reason, if we had not attached to it yet."""
    # UserInputError covers EncoderNotFound and EncoderWeightsMismatch; a missing data file
    # is the user's to fix as well.
    user_errors: tuple[type[BaseException], ...] = (UserInputError, FileNotFoundError)
    try:
        cli.main(args=argv, prog_name="tsp", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):  # click turns Ctrl-C into Abort
        _fail_project_run("interrupted", "KILLED")
        click.echo("tsp: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        _fail_project_run(err.format_message())
        err.show()
        sys.exit(err.exit_code)
    except user_errors as err:
        _fail_project_run(str(err))
        click.echo(f"tsp: error: {err}", err=True)
        sys.exit(2)
    except Exception as err:  # not bad input: one line still, the traceback on request
        _fail_project_run(f"{type(err).__name__}: {err}")
        if os.environ.get("TSP_TRACEBACK"):
            traceback.print_exc()
        click.echo(
            f"tsp: error: {type(err).__name__}: {err} (set TSP_TRACEBACK=1 for the traceback)",
            err=True,
        )
        sys.exit(1)


def _fail_project_run(reason: str, status: str = "FAILED") -> None:
    """Close the run ``mlflow run`` created if we failed before attaching to it."""
    try:
        from tsp_mlflow.tracking.session import configure_tracking, fail_pending_project_run

        configure_tracking()
        fail_pending_project_run(reason, status)
    except Exception as err:  # the original error matters more than this follow-up
        click.echo(f"tsp: could not mark the MLflow run as {status}: {err}", err=True)
