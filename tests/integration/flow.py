"""Helpers shared by the integration tests: run entry points and check the run tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from tsp_mlflow.tracking import schema

REPO = Path(__file__).resolve().parents[2]
MODALITIES = ("audio", "image")
PATTERNS = ("audio-image", "audio", "image")
METRICS = ("accuracy", "f1_macro", "loss")


def mlflow_run(
    entry: str, params: dict[str, object], env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """`mlflow run <repo> -e <entry> --env-manager local -P k=v ...`, as a user types it."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "-e",
        entry,
        "--env-manager",
        "local",
        "--experiment-name",
        "avdigits",
    ]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def runs(client: MlflowClient, query: str) -> list[Run]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, query, max_results=1000)


def children(client: MlflowClient, parent_id: str) -> list[Run]:
    return runs(client, f"tags.`{schema.PARENT_RUN_ID}` = '{parent_id}'")


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def check_pipeline_tree(
    client: MlflowClient,
    parent: Run,
    *,
    seeds: int,
    epochs: int,
    trained: bool,
    modalities: tuple[str, ...] = MODALITIES,
    metrics: tuple[str, ...] = METRICS,
    train_metrics: tuple[str, ...] = ("loss", "accuracy", "f1_macro"),
    headline: tuple[str, ...] = ("accuracy", "f1_macro"),
) -> None:
    """Every acceptance point about one pipeline run and its children."""
    from tsp_mlflow.data.batch import all_patterns, pattern_name

    patterns = tuple(pattern_name(p, modalities) for p in all_patterns(modalities))
    assert parent.info.status == "FINISHED"
    kids = children(client, parent.info.run_id)
    stages = sorted(r.data.tags[schema.STAGE] for r in kids)
    expected = (
        ["analysis"]
        + ["multimodal"] * (2 * seeds)
        + (["pretrain"] * len(modalities) if trained else [])
    )
    assert stages == sorted(expected)
    assert all(r.info.status == "FINISHED" for r in kids)

    encoder_runs = {m: parent.data.tags[schema.pipeline_pretrain_tag(m)] for m in modalities}
    for m, run_id in encoder_runs.items():
        pre = client.get_run(run_id)
        assert pre.info.status == "FINISHED" and pre.data.tags[schema.STAGE] == "pretrain"
        assert pre.data.tags[schema.MODALITY] == m
        files = artifact_paths(client, run_id)
        assert {
            "encoder/model.safetensors",
            "encoder/encoder.json",
            "config.yaml",
            "metrics.json",
        } <= files
        assert [x.step for x in client.get_metric_history(run_id, f"val/{m}/{metrics[0]}")] == list(
            range(1, epochs + 1)
        )
        assert client.get_run(run_id).data.params["optim.lr"]  # the resolved config as params

    fusion = [r for r in kids if r.data.tags[schema.STAGE] == "multimodal"]
    by_condition = {
        c: sorted(
            int(r.data.tags[schema.SEED]) for r in fusion if r.data.tags[schema.CONDITION] == c
        )
        for c in ("scratch", "pretrained")
    }
    assert by_condition == {"scratch": list(range(seeds)), "pretrained": list(range(seeds))}
    for run in fusion:
        tags = run.data.tags
        for m in modalities:
            if tags[schema.CONDITION] == "pretrained":
                assert tags[schema.encoder_run_tag(m)] == encoder_runs[m]
                assert tags[schema.encoder_source_tag(m)] == f"run:{encoder_runs[m]}"
            else:
                assert tags[schema.encoder_source_tag(m)] == "scratch"
                assert schema.encoder_run_tag(m) not in tags
        for pattern in patterns:
            for metric in metrics:
                history = client.get_metric_history(run.info.run_id, f"val/{pattern}/{metric}")
                assert [x.step for x in history] == list(range(1, epochs + 1)), (pattern, metric)
                assert f"test/{pattern}/{metric}" in run.data.metrics
        for key in (*(f"train/{m}" for m in train_metrics), "time/epoch_s"):
            steps = [x.step for x in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), key
        assert {"config.yaml", "metrics.json", schema.TEST_BOOTSTRAP_ARTIFACT} <= artifact_paths(
            client, run.info.run_id
        )
        check_run_figures(client, run)
        # Monitoring is on by default: per layer group, sampled at optimisation steps.
        grad = f"{schema.MONITOR_PREFIX}/grad_norm/head"
        assert grad in run.data.metrics and run.data.metrics[grad] > 0
        steps = [x.step for x in client.get_metric_history(run.info.run_id, grad)]
        assert steps and steps == sorted(steps) and steps[0] >= 1
    for run_id in encoder_runs.values():
        check_run_figures(client, client.get_run(run_id))
    assert schema.HEADLINE_FIGURE in artifact_paths(client, parent.info.run_id)
    assert_png(client, parent.info.run_id, schema.HEADLINE_FIGURE)

    (analysis,) = [r for r in kids if r.data.tags[schema.STAGE] == "analysis"]
    check_analysis_run(client, analysis, seeds=seeds, patterns=patterns, headline=headline)


TASK_FIGURES = {
    "multiclass": schema.CONFUSION_FIGURE,
    "sentiment3": schema.CONFUSION_FIGURE,
    "multilabel": schema.MULTILABEL_FIGURE,
    "sentiment_regression": schema.REGRESSION_FIGURE,
}


def assert_png(client: MlflowClient, run_id: str, path: str) -> tuple[int, int]:
    """The artifact is a PNG that decodes, and has more than one colour (not blank)."""
    from PIL import Image

    with Image.open(client.download_artifacts(run_id, path)) as image:
        assert image.format == "PNG", path
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 8, path
        assert min(image.size) >= 200, (path, image.size)
        return image.size


def check_run_figures(client: MlflowClient, run: Run) -> None:
    """Every training run's figures: learning curves, per-pattern test bars, and the one
    figure of its task (confusion matrix, multilabel reliability/F1, or regression)."""
    figures = {p for p in artifact_paths(client, run.info.run_id, schema.FIGURES_DIR)}
    task_figure = TASK_FIGURES[run.data.tags[schema.TASK]]
    assert figures == {schema.LEARNING_CURVES_FIGURE, schema.PATTERNS_FIGURE, task_figure}, (
        run.info.run_name,
        figures,
    )
    for path in figures:
        assert_png(client, run.info.run_id, path)


def check_analysis_run(
    client: MlflowClient,
    analysis: Run,
    *,
    seeds: int,
    patterns: tuple[str, ...] = PATTERNS,
    headline: tuple[str, ...] = ("accuracy", "f1_macro"),
) -> None:
    """The analysis run's artifacts exist, and every number in its table traces to runs."""
    files = artifact_paths(client, analysis.info.run_id)
    assert {
        schema.ANALYSIS_TABLE_ARTIFACT,
        schema.ANALYSIS_REPORT_ARTIFACT,
        schema.ANALYSIS_LATEX_ARTIFACT,
        schema.ANALYSIS_META_ARTIFACT,
        schema.ANALYSIS_COMPARISON_CSV,
        schema.ANALYSIS_VALUES_CSV,
        schema.ANALYSIS_FOREST_FIGURE,
        "analysis/figures/cost.png",
        "analysis/tables/variance.csv",
        "analysis/tables/aggregate.csv",
    } <= files
    variance = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, "analysis/tables/variance.csv")
    )
    assert len(variance) and (variance["se_test_set"] >= 0).all()  # every row: the test set's part
    png = Path(
        client.download_artifacts(analysis.info.run_id, schema.ANALYSIS_FOREST_FIGURE)
    ).read_bytes()
    assert png.startswith(b"\x89PNG")
    table = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, schema.ANALYSIS_COMPARISON_CSV)
    )
    assert sorted(set(table["pattern"])) == sorted(patterns) and (table["n_pairs"] == seeds).all()
    assert sorted(set(table["metric"])) == sorted(headline)
    for row in table.to_dict("records"):
        key = f"test/{row['pattern']}/{row['metric']}"
        arms = [
            [client.get_run(r).data.metrics[key] for r in row[f"run_ids_{arm}"].split(";")]
            for arm in ("a", "b")
        ]
        assert len(arms[0]) == len(arms[1]) == seeds
        assert row["delta"] == pytest.approx(sum(arms[0]) / seeds - sum(arms[1]) / seeds)
        assert analysis.data.metrics[f"delta/{key}"] == pytest.approx(row["delta"])
        assert analysis.data.metrics[f"n_pairs/{key}"] == seeds
        assert row["verdict"] in (
            "pretrained better",
            "scratch better",
            "equivalent",
            "inconclusive",
        )
    report = Path(
        client.download_artifacts(analysis.info.run_id, schema.ANALYSIS_REPORT_ARTIFACT)
    ).read_text()
    assert all(f"| {p} | {headline[0]} | {seeds} |" in report for p in patterns)
