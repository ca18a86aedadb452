"""Read tsp-mlflow runs from MLflow into tidy frames (the only module here that queries MLflow)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from tsp_mlflow.tracking import schema


def search_all_runs(
    client: MlflowClient, experiment_ids: list[str], filter_string: str
) -> list[Run]:
    """Every run matching the filter, following pages past MLflow's per-call limit."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def fusion_runs(
    client: MlflowClient, *, experiment_ids: list[str], parent_run_id: str | None = None
) -> list[Run]:
    """FINISHED multimodal runs of the experiments, optionally only one pipeline's children."""
    query = (
        f"tags.`{schema.STAGE}` = '{schema.STAGE_MULTIMODAL}' and attributes.status = 'FINISHED'"
    )
    if parent_run_id:
        query += f" and tags.`{schema.PARENT_RUN_ID}` = '{parent_run_id}'"
    return search_all_runs(client, experiment_ids, query)


def pattern_frame(runs: Iterable[Run], *, split: str, metric: str) -> pd.DataFrame:
    """One row per (run, pattern): run_id, condition, seed, pattern, value.

    Values are the final logged values of ``{split}/{pattern}/{metric}``.
    """
    rows = []
    for run in runs:
        tags = run.data.tags
        for key, value in run.data.metrics.items():
            parsed = schema.parse_metric_key(key)
            if parsed is None or parsed.split != split or parsed.metric != metric:
                continue
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "condition": tags.get(schema.CONDITION),
                    "seed": int(tags[schema.SEED]) if schema.SEED in tags else None,
                    "pattern": parsed.pattern,
                    "value": float(value),
                }
            )
    return pd.DataFrame(rows, columns=["run_id", "condition", "seed", "pattern", "value"])
