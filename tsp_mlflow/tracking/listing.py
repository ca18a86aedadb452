"""``tsp runs``: the store's runs as a table: pipelines, encoders, fusion runs, sweeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.experiments import resolve_experiment  # one lookup, one error message
from tsp_mlflow.tracking.params import redact_uri


def list_runs(
    experiments: Sequence[str] = (),
    *,
    stage: str | None = None,
    parent_run: str | None = None,
    condition: str | None = None,
    status: str | None = None,
    filter_string: str = "",
    max_results: int = 50,
) -> list[Run]:
    """Runs matching every given filter, newest first; experiments by name or id."""
    client = MlflowClient()
    ids = [resolve_experiment(client, e).experiment_id for e in experiments] or [
        e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    ]
    for name, value in (("--parent-run", parent_run), ("--condition", condition)):
        if value and not value.replace("_", "").replace("-", "").isalnum():
            raise UserInputError(f"{name} {value!r}: expected a run id or a condition name")
    clauses = []
    if stage:
        clauses.append(f"tags.`{schema.STAGE}` = '{stage}'")
    if parent_run:
        clauses.append(f"tags.`{schema.PARENT_RUN_ID}` = '{parent_run}'")
    if condition:
        clauses.append(f"tags.`{schema.CONDITION}` = '{condition}'")
    if status:
        clauses.append(f"attributes.status = '{status}'")
    if filter_string.strip():
        clauses.append(filter_string.strip())
    query = " and ".join(clauses)
    try:
        return list(
            client.search_runs(
                ids, query, max_results=max_results, order_by=["attributes.start_time DESC"]
            )
        )
    except MlflowException as err:
        if err.error_code == "INVALID_PARAMETER_VALUE":
            raise UserInputError(
                f"--filter {filter_string!r} is not a valid MLflow search filter: {err.message}"
            ) from None
        raise


def what(run: Run) -> str:
    """The run in a few words: its modality, condition and fusion, or its role."""
    tags = run.data.tags
    stage = tags.get(schema.STAGE, "")
    if stage == schema.STAGE_PRETRAIN:
        objective = tags.get(schema.OBJECTIVE, schema.OBJECTIVE_SUPERVISED)
        held = tags.get(schema.MODALITY) or tags.get(schema.MODALITIES, "")
        return f"{held} encoder" + (" (contrastive)" if objective != "supervised" else "")
    if stage == schema.STAGE_MULTIMODAL:
        parts = [
            tags.get(schema.CONDITION, "?"),
            tags.get(schema.FUSION, "?"),
            f"seed {tags.get(schema.SEED, '?')}",
        ]
        if tags.get(schema.missing_tag("train"), "0") not in ("0", "0.0", ""):
            parts.append(f"missing {tags[schema.missing_tag('train')]}")
        if tags.get(schema.SKIP_TRAIN):
            parts.append("untrained")
        return ", ".join(parts)
    if stage in (schema.STAGE_PIPELINE, schema.STAGE_ANALYSIS):
        return tags.get(schema.DATASET, "")
    if stage == schema.STAGE_SWEEP:
        return f"study {tags.get(schema.SWEEP_STUDY, '?')}"
    return ""


def headline(run: Run) -> str:
    """The full pattern's test headline metric, e.g. ``accuracy 0.913``."""
    tags, metrics = run.data.tags, run.data.metrics
    modalities = tags.get(schema.MODALITIES) or tags.get(schema.MODALITY) or ""
    pattern = "-".join(m for m in modalities.split(",") if m)
    for metric in (tags.get(schema.HEADLINE_METRICS) or "").split(","):
        key = schema.metric_key("test", pattern, metric)
        if metric and key in metrics:
            return f"{metric} {metrics[key]:.3f}"
    return ""


def _duration(run: Run) -> str:
    if not run.info.start_time:
        return ""
    end = run.info.end_time or int(dt.datetime.now().timestamp() * 1000)
    seconds = max(0, (end - run.info.start_time) // 1000)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else (f"{seconds // 60}m{seconds % 60:02d}s")
    )


def runs_table(runs: Sequence[Run], uri: str, console: Console | None = None) -> None:
    """Print the runs (full ids, to copy into --resume, --parent-run, run:<id>)."""
    if console is None:  # a pipe or a file: no terminal width to fit, keep rows whole
        console = Console()
        console = console if console.is_terminal else Console(width=250)
    if not runs:
        console.print(f"no runs match in {redact_uri(uri)}")
        return
    table = Table(
        title=f"{len(runs)} run(s) in {redact_uri(uri)}, newest first",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    for column in (
        "run id",
        "name",
        "stage",
        "status",
        "what",
        "test",
        "started",
        "took",
        "parent",
    ):
        table.add_column(column, no_wrap=column in ("run id", "parent"))
    for run in runs:
        started = (
            dt.datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
            if run.info.start_time
            else ""
        )
        table.add_row(
            run.info.run_id,
            run.info.run_name or "",
            run.data.tags.get(schema.STAGE, ""),
            run.info.status,
            what(run),
            headline(run),
            started,
            _duration(run),
            run.data.tags.get(schema.PARENT_RUN_ID, ""),
        )
    console.print(table)
