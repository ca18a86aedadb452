"""``tsp analyze`` (and ``python -m analysis``): does pretraining help? Paired statistics
per modality pattern, read from the tracking server.

The command lives in ``analysis/`` so that ``python -m analysis`` needs neither torch nor the
rest of the ``tsp`` command line; ``tsp`` registers this same command.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.run_flags import flags, run_flags


@click.command("analyze")
@run_flags("dry_run")
@click.option("--experiment", default="avdigits", show_default=True, help="experiment name or id")
@click.option(
    "--parent-run",
    "--parent_run",
    "parent_run",
    default="",
    help="a pipeline run id: analyse only its children",
)
@click.option(
    "--filter",
    "filter_string",
    default="",
    help="MLflow search filter ANDed to the selection, e.g. \"params.optim.lr = '0.001'\"",
)
@click.option(
    "--metric",
    "--metrics",
    "metrics",
    default="",
    help="comma-separated per-pattern metrics, one correction family with the patterns; "
    "empty: the task's headline metrics (accuracy,f1_macro for classification)",
)
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--a", "a", default="pretrained", show_default=True, help="condition A (Δ = A − B)")
@click.option("--b", "b", default="scratch", show_default=True, help="condition B")
@click.option("--pair-on", default="seed", show_default=True, help="column that pairs runs")
@click.option(
    "--correction",
    type=click.Choice(["bonferroni", "holm", "bh", "by", "none"]),
    default="bonferroni",
    show_default=True,
    help="p-value correction per family (verdicts use Bonferroni-simultaneous intervals "
    "unless none)",
)
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--confidence", type=float, default=0.95, show_default=True)
@click.option(
    "--rope",
    type=float,
    default=0.01,
    show_default=True,
    help="region of practical equivalence ±ROPE, metric units",
)
@click.option(
    "--threshold",
    default="",
    help="validation level for time-to-threshold; empty: 95% of the median best value",
)
@click.option("--curve-metric", default="", help="convergence/cost metric; empty: the first metric")
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
    help="also write the report, tables, figures and inputs into this folder",
)
@click.option("--no-log", is_flag=True, help="compute and print only; create no analysis run")
@click.option(
    "--tracking-uri", default="", help="tracking server or store (default: MLFLOW_TRACKING_URI)"
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="concurrent requests to the tracking server",
)
def analyze_command(
    experiment: str,
    parent_run: str,
    filter_string: str,
    output: Path | None,
    no_log: bool,
    tracking_uri: str,
    workers: int,
    **settings: Any,
) -> None:
    """Does pretraining help? Paired statistics per modality pattern, from the tracking server.

    \b
    Examples:
      tsp analyze --experiment avdigits
      tsp analyze --parent-run <pipeline run id> --metric accuracy --correction bh
      tsp analyze --tracking-uri http://mlflow.lab:5000 --experiment 1 --no-log --output report/
      tsp analyze --experiment avdigits --filter "tags.tsp.fusion = 'concat'"
      tsp analyze --experiment avdigits --dry-run    # = --no-log: create no analysis run
    """
    from analysis.analyze import analyze
    from analysis.report import left_out_lines, warning_lines
    from analysis.results import AnalysisSettings
    from tsp_mlflow.tracking.session import configure_tracking, where_to_look

    no_log = flags("analyze", supported=("dry_run",)).dry_run or no_log
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    uri = configure_tracking()  # no use_experiment here: analysing must never create one
    settings["threshold"] = optional_float("threshold", settings["threshold"])
    settings["curve_metric"] = settings["curve_metric"] or None
    result = analyze(
        experiment=experiment or None,
        parent_run=parent_run or None,
        filter_string=filter_string,
        settings=AnalysisSettings(**settings),
        log=not no_log,
        output_dir=output,
        max_workers=workers,
    )
    click.echo(result.report)
    for line in [*warning_lines(result.results), *left_out_lines(result.results)]:
        click.echo(line)
    if result.run_id:
        click.echo(f"analysis run {result.run_id}")
    if result.folder:
        click.echo(f"report written to {result.folder}")
    click.echo(where_to_look(uri))


def optional_float(name: str, text: str) -> float | None:
    if not str(text).strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise UserInputError(f"{name} must be a number, got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    """``python -m analysis``: errors print one line (exit 2 for bad input, 1 otherwise), as
    under ``tsp``. No project run to close here: ``mlflow run -e analyze`` goes through
    ``tsp`` (:func:`tsp_mlflow.cli.main`)."""
    from tsp_mlflow.tracking.params import redact_uri

    try:
        analyze_command.main(args=argv, prog_name="python -m analysis", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (UserInputError, FileNotFoundError) as err:
        click.echo(f"python -m analysis: error: {redact_uri(str(err))}", err=True)
        sys.exit(2)
    except Exception as err:
        if os.environ.get("TSP_TRACEBACK"):
            traceback.print_exc()
        click.echo(
            f"python -m analysis: error: {type(err).__name__}: {redact_uri(str(err))} "
            "(set TSP_TRACEBACK=1 for the traceback)",
            err=True,
        )
        sys.exit(1)
