"""The ``analyze`` entry point: pretrained vs scratch per pattern, logged to an analysis run."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from analysis.paired import paired_comparison
from analysis.report import markdown_table, save_figure
from analysis.runs import fusion_runs, pattern_frame
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import redact_uri
from tsp_mlflow.tracking.session import tracked_run


@dataclass
class Analysis:
    run_id: str
    table: pd.DataFrame
    markdown: str


def analyze(
    *,
    experiment: str | None,
    parent_run: str | None,
    metric: str = "accuracy",
    split: str = "test",
    nested: bool = False,
) -> Analysis:
    """Compare ``pretrained`` with ``scratch`` fusion runs, per pattern, paired by seed.

    Args:
        experiment: experiment name or id to search (ignored when ``parent_run`` is given).
        parent_run: a pipeline run id; only its children are compared.
        metric: per-pattern metric, e.g. ``accuracy`` or ``f1_macro``.
        split: ``test`` (final) or ``val`` (last epoch).
    """
    client = MlflowClient()
    experiment_ids = [_experiment_id(client, experiment, parent_run)]
    runs = fusion_runs(client, experiment_ids=experiment_ids, parent_run_id=parent_run)
    where = f"pipeline run {parent_run}" if parent_run else f"experiment {experiment!r}"
    if not runs:
        raise UserInputError(
            f"no FINISHED multimodal runs in {where}; run the pipeline (or multimodal) first"
        )
    frame = pattern_frame(runs, split=split, metric=metric)
    if frame.empty:
        known = sorted(
            {k.split("/")[-1] for r in runs for k in r.data.metrics if k.startswith(f"{split}/")}
        )
        raise UserInputError(
            f"metric={metric!r} not found for split {split!r} in {where}; available: {', '.join(known)}"
        )
    table = paired_comparison(frame)
    markdown = markdown_table(table, metric=f"{split} {metric}")
    tags = {schema.STAGE: schema.STAGE_ANALYSIS}
    datasets = {r.data.tags.get(schema.DATASET) for r in runs} - {None}
    if len(datasets) == 1:
        tags[schema.DATASET] = datasets.pop()
    # A standalone analysis lands beside the runs it analyses.
    with tracked_run(
        run_name="analysis", tags=tags, nested=nested, experiment_id=experiment_ids[0]
    ) as run:
        mlflow.log_params(
            {
                "experiment_ids": ",".join(experiment_ids),
                "parent_run": parent_run or "",
                "metric": metric,
                "split": split,
                "pairing": "seed",
                "arms": "pretrained,scratch",
                "n_runs": len(runs),
            }
        )
        mlflow.log_text(markdown, schema.ANALYSIS_TABLE_ARTIFACT)
        mlflow.log_text(table.to_csv(index=False), schema.ANALYSIS_CSV_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            figure = save_figure(table, Path(tmp) / "figure.png", metric=f"{split} {metric}")
            mlflow.log_artifact(str(figure), str(Path(schema.ANALYSIS_FIGURE_ARTIFACT).parent))
        headline = {}
        for r in table.itertuples():
            for name, value in (("delta", r.delta), ("p_value", r.p_value), ("n_pairs", r.n)):
                if pd.notna(value):
                    headline[f"{name}/{split}/{r.pattern}/{metric}"] = float(value)
        mlflow.log_metrics(headline)
    return Analysis(run.info.run_id, table, markdown)


def _experiment_id(client: MlflowClient, experiment: str | None, parent_run: str | None) -> str:
    if parent_run:
        try:
            return client.get_run(parent_run).info.experiment_id
        except MlflowException:
            raise UserInputError(
                f"parent_run={parent_run!r} does not exist in {redact_uri(mlflow.get_tracking_uri())}"
            ) from None
    if not experiment:
        raise UserInputError("give -P experiment=<name or id> or -P parent_run=<pipeline run id>")
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        try:
            found = client.get_experiment(experiment)
        except MlflowException:
            found = None
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise UserInputError(
            f"experiment={experiment!r} not found; experiments: {', '.join(names)}"
        )
    return found.experiment_id
