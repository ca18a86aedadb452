"""MLflow runs → tidy frames. With :mod:`analysis.histories`, the only modules of ``analysis/`` that talk to MLflow.

Runs come from an experiment, a parent (pipeline) run, or any MLflow filter string;
search pages are followed past MLflow's 1000-run page size. Metric histories come from
:mod:`analysis.histories`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException

from analysis.errors import AnalysisInputError
from analysis.histories import MAX_WORKERS
from tsp_mlflow.tracking import experiments, schema
from tsp_mlflow.tracking.params import redact_uri

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # MLflow's largest search page
_ENCODER_RUN_TAG = re.compile(r"^tsp\.encoder\.(?P<modality>.+)\.run_id$")


@dataclass(frozen=True)
class Selection:
    """Which runs to analyse: experiments, optionally one parent run's children, and an
    optional MLflow filter string (``params.optim.lr = '0.001'``, ``tags.tsp.fusion = 'concat'``)."""

    experiment_ids: tuple[str, ...]
    parent_run_id: str | None = None
    filter_string: str = ""

    def query(self, stage: str, *, finished: bool = True) -> str:
        clauses = [f"tags.`{schema.STAGE}` = '{stage}'"]
        if finished:
            clauses.append("attributes.status = 'FINISHED'")
        # --skip-train runs were never trained: they answer nothing about pretraining.
        clauses.append(f"tags.`{schema.SKIP_TRAIN}` IS NULL")
        if self.parent_run_id:
            clauses.append(f"tags.`{schema.PARENT_RUN_ID}` = '{self.parent_run_id}'")
        else:  # sweep trials differ in their hyperparameters: never pool them by default
            clauses.append(f"tags.`{schema.TRIAL_STATE}` IS NULL")
        if self.filter_string.strip():
            clauses.append(self.filter_string.strip())
        return " and ".join(clauses)


def resolve_experiment(client: MlflowClient, experiment: str) -> Experiment:
    """An experiment by name or id (:func:`tsp_mlflow.tracking.experiments.resolve_experiment`),
    its error raised as the analysis's own."""
    try:
        return experiments.resolve_experiment(client, experiment)
    except experiments.ExperimentNotFound as err:
        raise AnalysisInputError(str(err)) from None


def parent_experiment(client: MlflowClient, parent_run_id: str) -> str:
    try:
        return client.get_run(parent_run_id).info.experiment_id
    except MlflowException:
        raise AnalysisInputError(
            f"parent_run={parent_run_id!r} does not exist in {redact_uri(client.tracking_uri)}; "
            "give the run id of a pipeline run (see the MLflow UI or `mlflow runs list`)"
        ) from None


def search_all_runs(
    client: MlflowClient, experiment_ids: Sequence[str], filter_string: str
) -> list[Run]:
    """Every run matching the filter, following pages past MLflow's per-call limit."""
    runs: list[Run] = []
    token = None
    while True:
        try:
            page = client.search_runs(
                list(experiment_ids), filter_string, max_results=PAGE_SIZE, page_token=token
            )
        except MlflowException as err:
            if err.error_code == "INVALID_PARAMETER_VALUE":
                raise AnalysisInputError(
                    f"filter {filter_string!r} is not a valid MLflow search filter: {err.message}"
                ) from None
            raise
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def select_runs(
    client: MlflowClient, selection: Selection, stage: str = schema.STAGE_MULTIMODAL
) -> list[Run]:
    """FINISHED runs of one stage within the selection."""
    return search_all_runs(client, selection.experiment_ids, selection.query(stage))


LEFT_OUT_COLUMNS = ["run_id", "run_name", "condition", "seed", "status", "reason"]


def select_runs_and_left_out(
    client: MlflowClient, selection: Selection, stage: str = schema.STAGE_MULTIMODAL
) -> tuple[list[Run], pd.DataFrame]:
    """The FINISHED runs of one stage within the selection, and every other run of it
    there (RUNNING, FAILED, KILLED), each with the reason it is left out: an analysis
    names what it did not count."""
    every = search_all_runs(
        client, selection.experiment_ids, selection.query(stage, finished=False)
    )
    finished = [r for r in every if r.info.status == "FINISHED"]
    rows = []
    for run in every:
        if run.info.status == "FINISHED":
            continue
        tags = run.data.tags
        reason = {
            "RUNNING": "still RUNNING (or its process died: `tsp runs reap`)",
            "FAILED": f"FAILED: {tags.get(schema.ERROR, 'no reason recorded')}",
            "KILLED": "KILLED before it finished (resume it with --resume)",
            "SCHEDULED": "SCHEDULED, not started",
        }.get(run.info.status, run.info.status)
        rows.append(
            {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "condition": tags.get(schema.CONDITION),
                "seed": tags.get(schema.SEED),
                "status": run.info.status,
                "reason": reason,
            }
        )
    return finished, pd.DataFrame(rows, columns=LEFT_OUT_COLUMNS)


def seed_of(run: Run) -> int | None:
    """A run's ``tsp.seed`` tag as an integer; None when the run has none (it is then
    compared unpaired and named). A malformed tag is an error naming the run."""
    text = run.data.tags.get(schema.SEED)
    if text is None or text.strip() == "":
        return None
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    raise AnalysisInputError(
        f"run {run.info.run_id} has tag {schema.SEED}={text!r}, which is not an integer seed; "
        f"set it right (MlflowClient().set_tag('{run.info.run_id}', '{schema.SEED}', '1')) or "
        f"leave the run out with --filter \"attributes.run_id != '{run.info.run_id}'\""
    )


def cast_param(text: str | None) -> bool | int | float | str | None:
    """A param string as the value the config held: bool, int, float, None or str."""
    if text is None or text in ("None", "null", "~"):
        return None
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: identity and schema tags as typed columns, then every param cast
    (``params.<key>``) and every non-pattern metric (``metrics.<key>``).

    ``own_s`` is the run's own compute: its ``time/total_s`` metric, or its wall time
    when the metric is absent.
    """
    rows = []
    for run in runs:
        info, tags, metrics = run.info, run.data.tags, run.data.metrics
        wall = (info.end_time - info.start_time) / 1000 if info.end_time else math.nan
        rows.append(
            {
                "run_id": info.run_id,
                "run_name": info.run_name,
                "experiment_id": info.experiment_id,
                "status": info.status,
                "start_time": pd.Timestamp(info.start_time, unit="ms", tz="UTC"),
                "wall_s": wall,
                "own_s": float(metrics.get(schema.TIME_TOTAL, wall)),
                "stage": tags.get(schema.STAGE),
                "dataset": tags.get(schema.DATASET),
                "condition": tags.get(schema.CONDITION),
                "seed": seed_of(run),
                "fusion": tags.get(schema.FUSION),
                "missing": tags.get(schema.missing_tag("train"), "0"),
                **method_columns(tags),
                "modalities": tags.get(schema.MODALITIES) or tags.get(schema.MODALITY),
                "parent_run_id": tags.get(schema.PARENT_RUN_ID),
                "config_hash": tags.get(schema.CONFIG_HASH),
                "code_version": tags.get(schema.CODE_VERSION),
                **{f"params.{k}": cast_param(v) for k, v in run.data.params.items()},
                **{
                    f"metrics.{k}": v
                    for k, v in metrics.items()
                    if schema.parse_metric_key(k) is None
                },
            }
        )
    frame = pd.DataFrame(rows)
    if "seed" in frame:
        frame["seed"] = frame["seed"].astype("Int64")
    return frame


def method_columns(tags: dict[str, str]) -> dict[str, str]:
    """A fusion run's gradient strategy and imputation; runs logged before they existed
    used the multimodal loss only and the fusion's own rule."""
    return {
        "gradient": tags.get(schema.GRADIENT, schema.GRADIENT_JOINT),
        "imputation": tags.get(schema.IMPUTATION, schema.IMPUTATION_NONE),
    }


def pattern_values(
    runs: Iterable[Run], *, split: str | None = None, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per (run, split, pattern, metric): the final logged value, with the run's
    condition, seed, fusion and train missing rate beside it for grouping."""
    rows = []
    for run in runs:
        tags = run.data.tags
        seed = seed_of(run)
        for key, value in run.data.metrics.items():
            parsed = schema.parse_metric_key(key)
            if parsed is None or (split and parsed.split != split):
                continue
            if parsed.pattern == schema.OBSERVED_PATTERN:  # not a modality pattern
                continue
            if metrics is not None and parsed.metric not in metrics:
                continue
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "condition": tags.get(schema.CONDITION),
                    "seed": seed,
                    "dataset": tags.get(schema.DATASET),
                    "fusion": tags.get(schema.FUSION),
                    "missing": tags.get(schema.missing_tag("train"), "0"),
                    **method_columns(tags),
                    "split": parsed.split,
                    "pattern": parsed.pattern,
                    "metric": parsed.metric,
                    "value": float(value),
                }
            )
    columns = [
        "run_id",
        "condition",
        "seed",
        "dataset",
        "fusion",
        "missing",
        "gradient",
        "imputation",
        "split",
        "pattern",
        "metric",
        "value",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def lineage_frame(
    client: MlflowClient, runs: Iterable[Run], *, max_workers: int = MAX_WORKERS
) -> pd.DataFrame:
    """The pretrain runs each fusion run consumed, through its ``tsp.encoder.<m>.run_id``
    tags: run_id, modality, pretrain_run_id, pretrain_s (that run's own time), and
    pretrain_status. Scratch encoders have no row. Each pretrain run is fetched once."""
    links = []
    for run in runs:
        for tag, value in run.data.tags.items():
            match = _ENCODER_RUN_TAG.match(tag)
            if match:
                links.append(
                    {
                        "run_id": run.info.run_id,
                        "modality": match["modality"],
                        "pretrain_run_id": value,
                    }
                )
    columns = ["run_id", "modality", "pretrain_run_id", "pretrain_s", "pretrain_status"]
    if not links:
        return pd.DataFrame(columns=columns)
    unique = sorted({link["pretrain_run_id"] for link in links})
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        fetched = dict(
            zip(unique, pool.map(lambda rid: _get_run_or_none(client, rid), unique), strict=True)
        )
    missing = [rid for rid, r in fetched.items() if r is None]
    if missing:
        raise AnalysisInputError(
            f"fusion runs name pretrain run(s) {', '.join(missing)} that no longer exist in "
            f"{redact_uri(client.tracking_uri)} (deleted?); their cost cannot be counted"
        )
    own = runs_frame(fetched.values()).set_index("run_id")
    frame = pd.DataFrame(links)
    frame["pretrain_s"] = frame["pretrain_run_id"].map(own["own_s"])
    frame["pretrain_status"] = frame["pretrain_run_id"].map(own["status"])
    return frame[columns]


def _get_run_or_none(client: MlflowClient, run_id: str) -> Run | None:
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def learning_curve_table(
    histories: pd.DataFrame, runs: pd.DataFrame, key: str, *, time_key: str = schema.TIME_EPOCH
) -> pd.DataFrame:
    """One row per (run, epoch) of ``key``: run_id, condition, seed, fusion, epoch, value,
    seconds (cumulative own time at that epoch's end, from ``time_key``)."""
    values = histories[histories["key"] == key][["run_id", "step", "value"]]
    times = histories[histories["key"] == time_key][["run_id", "step", "value"]]
    times = times.sort_values(["run_id", "step"]).drop_duplicates(["run_id", "step"], keep="last")
    times = times.assign(seconds=times.groupby("run_id")["value"].cumsum())[
        ["run_id", "step", "seconds"]
    ]
    values = values.drop_duplicates(["run_id", "step"], keep="last")
    curves = values.merge(times, on=["run_id", "step"], how="left").rename(
        columns={"step": "epoch"}
    )
    meta = runs[["run_id", "condition", "seed", "fusion"]]
    curves = curves.merge(meta, on="run_id", how="inner")
    return curves[
        ["run_id", "condition", "seed", "fusion", "epoch", "value", "seconds"]
    ].sort_values(["run_id", "epoch"], ignore_index=True)


def test_bootstraps(
    client: MlflowClient, run_ids: Sequence[str], *, max_workers: int = MAX_WORKERS
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """run id -> pattern -> metric -> replicate values, from each run's
    ``test_bootstrap.json`` (JSON, never unpickled); runs without one are absent."""

    def fetch(run_id: str) -> tuple[str, dict | None]:
        try:
            path = client.download_artifacts(run_id, schema.TEST_BOOTSTRAP_ARTIFACT)
        except (MlflowException, OSError):  # older runs, or test_bootstrap=0
            return run_id, None
        try:
            with open(path, encoding="utf-8") as handle:
                found = json.load(handle)
            return run_id, found["values"] if isinstance(found.get("values"), dict) else None
        except (ValueError, KeyError, AttributeError):
            log.warning(
                "run %s: %s is not a test-set bootstrap; ignored",
                run_id,
                schema.TEST_BOOTSTRAP_ARTIFACT,
            )
            return run_id, None

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return {r: v for r, v in pool.map(fetch, list(dict.fromkeys(run_ids))) if v is not None}
