"""The ``analyze`` entry point: fetch runs from the tracking server, compute every
statistic, and log the report, figures and input snapshot to an analysis run."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from analysis import figures
from analysis.data import (
    Selection,
    lineage_frame,
    parent_experiment,
    pattern_values,
    resolve_experiment,
    runs_frame,
    select_runs_and_left_out,
    test_bootstraps,
)
from analysis.errors import AnalysisInputError
from analysis.histories import MAX_WORKERS, fetch_histories
from analysis.report import render
from analysis.results import AnalysisInputs, AnalysisSettings, Results, compute_results
from analysis.stats import full_pattern
from analysis.stats.sequential import SequentialDesign
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import redact_uri
from tsp_mlflow.tracking.schema import REPRESENTATIONS_DIR
from tsp_mlflow.tracking.session import tracked_run

VERSIONED = ("tsp-mlflow", "mlflow", "numpy", "scipy", "statsmodels", "pandas", "matplotlib")


@dataclass
class Analysis:
    run_id: str | None  # None when nothing was logged (log=False)
    results: Results
    markdown: str  # the headline table
    report: str  # the whole markdown report
    folder: Path | None  # where the files were written, when output_dir was given


def analyze(
    *,
    experiment: str | None = None,
    parent_run: str | None = None,
    filter_string: str = "",
    settings: AnalysisSettings | None = None,
    nested: bool = False,
    log: bool = True,
    output_dir: Path | None = None,
    max_workers: int = MAX_WORKERS,
    design: SequentialDesign | None = None,
    look: int | None = None,
) -> Analysis:
    """Compare ``settings.a`` with ``settings.b`` over FINISHED multimodal runs.

    Args:
        experiment: experiment name or id (ignored when ``parent_run`` is given).
        parent_run: a pipeline run id; only its children are analysed.
        filter_string: an MLflow search filter ANDed to the selection, e.g.
            ``"params.optim.lr = '0.001'"``.
        log: create an analysis run with the report (False: compute and return only).
        output_dir: also write the report files there (a folder; created if needed).
        design: the adaptive-seed design the runs came from; None reads it from an
            ``auto`` pipeline's parent run, else the design is fixed (one look).
        look: which look of that design this analysis is (tagged on the analysis run).
    """
    settings = settings or AnalysisSettings()
    client = MlflowClient()
    selection = _selection(client, experiment, parent_run, filter_string)
    where = _describe(selection, experiment)
    runs, left_out = select_runs_and_left_out(client, selection)
    if design is None and parent_run:
        design = design_of_pipeline(client, parent_run)
    if not runs:
        raise AnalysisInputError(
            f"no FINISHED multimodal runs in {where}; run the pipeline (or multimodal) first"
        )
    if not settings.metrics:
        settings = dataclasses.replace(settings, metrics=headline_metrics_of(runs, where))
    values = pattern_values(runs)
    split_values = values[values["split"] == settings.split]
    if split_values.empty:
        raise AnalysisInputError(f"no {settings.split!r} metrics in {where}; use split=test or val")
    full = full_pattern(list(split_values["pattern"].unique()))
    keys = [
        schema.metric_key("val", full, settings.history_metric),
        schema.TIME_EPOCH,
        schema.TRAIN_LOSS,
    ]
    inputs = AnalysisInputs(
        runs=runs_frame(runs),
        values=values,
        histories=fetch_histories(
            client, [r.info.run_id for r in runs], keys, max_workers=max_workers
        ),
        lineage=lineage_frame(client, runs, max_workers=max_workers),
        left_out=left_out,
        bootstraps=test_bootstraps(client, [r.info.run_id for r in runs], max_workers=max_workers)
        if settings.split == "test"
        else {},
    )
    results = compute_results(inputs, settings, design)
    title = f"Does task-specific pretraining help? {settings.a} vs {settings.b}"
    inputs_line = (
        f"{len(runs)} FINISHED multimodal runs from {where}"
        + (f", filter `{filter_string}`" if filter_string else "")
        + f"; tracking store {redact_uri(client.tracking_uri)}."
    )
    headline, report_md, report_tex = render(results, title=title, inputs_line=inputs_line)

    if not log and not output_dir:  # nothing would keep the files: compute only
        return Analysis(None, results, headline, report_md, None)
    folder = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="tsp-analysis-"))
    try:
        _write_files(
            folder,
            results,
            inputs,
            headline,
            report_md,
            report_tex,
            meta=_meta(selection, settings, results, client, len(runs)),
        )
        embeddings = _representations(client, results)
        if embeddings:
            figures.representations(embeddings, folder / "figures" / "representations.png")
        run_id = _log(folder, selection, settings, results, runs, nested, look) if log else None
    finally:
        if not output_dir:
            shutil.rmtree(folder, ignore_errors=True)
    return Analysis(run_id, results, headline, report_md, folder if output_dir else None)


def design_of_pipeline(client: MlflowClient, run_id: str) -> SequentialDesign | None:
    """The adaptive-seed design an ``auto`` pipeline ran with, from its params; None for a
    fixed number of seeds (or a run that is not a pipeline)."""
    params = client.get_run(run_id).data.params
    if params.get("pipeline.seeds") != "auto":
        return None
    fields = {"min": int, "step": int, "max": int, "spending": str, "futility": float, "stop": str}
    return SequentialDesign(
        **{
            name: kind(params[f"pipeline.seeds.{name}"])
            for name, kind in fields.items()
            if f"pipeline.seeds.{name}" in params
        }
    )


def headline_metrics_of(runs: list[Run], where: str) -> tuple[str, ...]:
    """The task's headline metrics, from the runs' ``tsp.headline_metrics`` tag.

    Runs logged before tasks existed carry no tag; they were multiclass runs.
    """
    found = {r.data.tags.get(schema.HEADLINE_METRICS, "accuracy,f1_macro") for r in runs}
    if len(found) > 1:
        raise AnalysisInputError(
            f"the runs in {where} come from different tasks (headline metrics "
            f"{' vs '.join(sorted(found))}); narrow the selection with --filter, or name "
            "the metrics with --metric"
        )
    return tuple(found.pop().split(","))


def _selection(
    client: MlflowClient, experiment: str | None, parent_run: str | None, filter_string: str
) -> Selection:
    if parent_run:
        return Selection((parent_experiment(client, parent_run),), parent_run, filter_string)
    if not experiment:
        raise AnalysisInputError(
            "give -P experiment=<name or id> or -P parent_run=<pipeline run id>"
        )
    return Selection((resolve_experiment(client, experiment).experiment_id,), None, filter_string)


def _describe(selection: Selection, experiment: str | None) -> str:
    if selection.parent_run_id:
        return f"pipeline run {selection.parent_run_id}"
    return f"experiment {experiment!r}"


def _write_files(
    folder: Path,
    results: Results,
    inputs: AnalysisInputs,
    headline: str,
    report_md: str,
    report_tex: str,
    meta: dict[str, object],
) -> None:
    """The artifact tree under ``analysis/`` (see docs/tracking-schema.md)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.md").write_text(headline)
    (folder / "report.md").write_text(report_md)
    (folder / "report.tex").write_text(report_tex)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    tables = folder / "tables"
    tables.mkdir(exist_ok=True)
    for name, frame in _tables(results).items():
        frame.to_csv(tables / f"{name}.csv", index=False)
    snapshot = folder / "inputs"
    snapshot.mkdir(exist_ok=True)
    for name in ("runs", "values", "histories", "lineage"):
        getattr(inputs, name).to_csv(snapshot / f"{name}.csv", index=False)
    figures.save_all(results, folder / "figures")


def _representations(client: MlflowClient, results: Results) -> dict[str, dict[str, np.ndarray]]:
    """arm -> {modality: (N, D) test embeddings, "targets": (N, ...)} from one run per arm
    (the lowest seed; the first fusion method), read as .npy without pickle."""
    s = results.settings
    runs = results.runs
    if runs.empty or "condition" not in runs:
        return {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm in (s.a, s.b):
        pick = runs[runs["condition"] == arm].sort_values(["fusion", "seed"], na_position="last")
        if pick.empty:
            return {}
        run_id = pick["run_id"].iloc[0]
        try:
            folder = Path(client.download_artifacts(run_id, REPRESENTATIONS_DIR))
        except Exception:  # runs without representations (older, or representations=false)
            return {}
        out[f"{arm} ({run_id[:8]})"] = {
            p.stem: np.load(p, allow_pickle=False) for p in sorted(folder.glob("*.npy"))
        }
    return out


def _tables(results: Results) -> dict[str, pd.DataFrame]:
    tables = {
        "comparison": results.comparison,
        "summary": results.summary,
        "first_epoch": results.first_epoch,
        "aulc": results.aulc,
        "time_to_threshold": results.time_to_threshold,
        "cost": results.cost,
        "cost_summary": results.cost_summary,
        "break_even": results.break_even,
        "equal_compute": results.equal_compute,
        "equal_compute_values": results.equal_compute_values,
        "efficiency": results.efficiency,
        "multimodal": results.multimodal,
        "multimodal_summary": results.multimodal_summary,
        "aggregate": results.aggregate,
        "variance": results.variance,
        "left_out": results.left_out,
    }
    for duration, comparison in results.survival.items():
        tables[f"survival_{duration}"] = comparison.curves
        tables[f"survival_{duration}_summary"] = comparison.summary.assign(
            logrank_statistic=comparison.statistic, logrank_p=comparison.p_value
        )
    if results.bands is not None:
        tables["curve_bands"] = results.bands.bands
        tables["curve_differences"] = results.bands.differences
    tables["probes"] = results.probes
    for name, many in (
        ("conditions", results.conditions),
        ("fusions", results.fusions),
        ("missing_rates", results.missing_rates),
        ("gradients", results.gradients),
        ("imputations", results.imputations),
        ("objectives", results.objectives),
    ):
        if isinstance(many, pd.DataFrame):
            tables[name] = many
        elif many is not None:
            for part in ("omnibus", "ranks", "pairwise", "cliques"):
                tables[f"{name}_{part}"] = getattr(many, part)
    return {k: v for k, v in tables.items() if isinstance(v, pd.DataFrame)}


def _meta(
    selection: Selection,
    settings: AnalysisSettings,
    results: Results,
    client: MlflowClient,
    n_runs: int,
) -> dict[str, object]:
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tracking_uri": redact_uri(client.tracking_uri),
        "selection": {
            "experiment_ids": list(selection.experiment_ids),
            "parent_run": selection.parent_run_id,
            "filter": selection.filter_string,
            "query": selection.query(schema.STAGE_MULTIMODAL),
        },
        "settings": dataclasses.asdict(settings),
        "grouping": list(results.by),
        "pairing": settings.pair_on,
        "correction": settings.correction,
        "design": dataclasses.asdict(results.design) if results.design else "fixed",
        "threshold": results.threshold,
        "curve_key": results.curve_key,
        "rng_seed": settings.seed,
        "n_runs": n_runs,
        "python": platform.python_version(),
        "versions": versions,
    }


def _log(
    folder: Path,
    selection: Selection,
    settings: AnalysisSettings,
    results: Results,
    runs: list,
    nested: bool,
    look: int | None,
) -> str:
    tags = {schema.STAGE: schema.STAGE_ANALYSIS}
    if look is not None:
        tags[schema.ANALYSIS_LOOK] = str(look)
    datasets = {r.data.tags.get(schema.DATASET) for r in runs} - {None}
    if len(datasets) == 1:
        tags[schema.DATASET] = datasets.pop()
    # A standalone analysis lands beside the runs it analyses.
    with tracked_run(
        run_name="analysis", tags=tags, nested=nested, experiment_id=selection.experiment_ids[0]
    ) as run:
        params = {
            f"analysis.{k}": ",".join(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(settings).items()
        }
        params |= {
            "analysis.experiment_ids": ",".join(selection.experiment_ids),
            "analysis.parent_run": selection.parent_run_id or "",
            "analysis.filter": selection.filter_string or "none",
            "analysis.grouping": ",".join(results.by),
            "analysis.threshold": results.threshold,
            "analysis.n_runs": len(runs),
            "analysis.n_left_out": len(results.left_out),
            "analysis.design": results.design.describe() if results.design else "fixed",
        }
        mlflow.log_params({k: "none" if v is None else v for k, v in params.items()})
        mlflow.log_artifacts(str(folder), schema.ANALYSIS_DIR)
        mlflow.log_metrics(headline_metrics(results))
    return run.info.run_id


def headline_metrics(results: Results) -> dict[str, float]:
    """The numbers the MLflow UI can compare across analyses (finite values only)."""
    s = results.settings
    found: dict[str, float] = {}
    for r in results.comparison.to_dict("records"):
        where = "/".join(str(r[c]) for c in results.by if c != "metric")
        for name, column in (
            ("delta", "delta"),
            ("ci_low", "ci_low"),
            ("ci_high", "ci_high"),
            ("p_value", "p_value"),
            ("p_adjusted", "p_adjusted"),
            ("effect", "effect_size"),
            ("n_pairs", "n_pairs"),
        ):
            found[f"{name}/{s.split}/{where}/{r['metric']}"] = r[column]
    for frame, prefix in ((results.first_epoch, "first_epoch"), (results.aulc, "aulc")):
        for r in frame.to_dict("records"):
            label = "loss" if "loss" in r["quantity"] else "val"
            found[f"{prefix}/{label}/delta"] = r["delta"]
            found[f"{prefix}/{label}/p_adjusted"] = r["p_adjusted"]
    for duration, comparison in results.survival.items():
        found[f"time_to_threshold/{duration}/logrank_p"] = comparison.p_value
        for r in comparison.summary.to_dict("records"):
            found[f"time_to_threshold/{duration}/median/{r['condition']}"] = r["median"]
    for r in results.cost_summary.to_dict("records"):
        found[f"cost/total_s/{r['condition']}"] = r["total_s"]
        if r["condition"] == s.a and "extra_pct" in r:
            found["cost/extra_pct"] = r["extra_pct"]
            found["cost/extra_amortised_pct"] = r["extra_amortised_pct"]
    for r in results.break_even.to_dict("records"):
        key = "own" if r["basis"].startswith("own") else "threshold"
        found[f"cost/break_even_k/{key}"] = r["break_even_k"]
    for r in results.multimodal.to_dict("records"):
        if r["quantity"] == "fusion_gain":
            found[f"fusion_gain/delta/{r['metric']}"] = r["delta"]
    return {
        k: float(v)
        for k, v in found.items()
        if v is not None and pd.notna(v) and math.isfinite(float(v))
    }
