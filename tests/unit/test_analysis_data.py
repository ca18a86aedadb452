"""The data layer and the whole analysis against a real MLflow sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

import analysis.data as data
import analysis.histories as histories
from analysis.analyze import analyze
from analysis.errors import AnalysisInputError
from analysis.results import AnalysisSettings
from analysis.synthetic import log_synthetic_pipeline
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.slow  # a real MLflow store / fresh interpreters: the full tier


@pytest.fixture
def synthetic(tracking_uri: str) -> tuple[MlflowClient, str, dict[str, list[str]]]:
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("avdigits")
    ids = log_synthetic_pipeline(client, experiment_id, seeds=8, epochs=4, effect=0.05, noise=0.005)
    return client, experiment_id, ids


def test_search_follows_pages(synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    client, experiment_id, ids = synthetic
    monkeypatch.setattr(data, "PAGE_SIZE", 5)  # 12 fusion runs: three pages
    runs = data.select_runs(client, data.Selection((experiment_id,)))
    assert sorted(r.info.run_id for r in runs) == sorted(ids["scratch"] + ids["pretrained"])


def test_runs_frame_casts_params_and_parses_tags(synthetic) -> None:
    client, experiment_id, _ = synthetic
    runs = data.select_runs(
        client, data.Selection((experiment_id,), filter_string="tags.`tsp.seed` = '2'")
    )
    frame = data.runs_frame(runs)
    assert len(frame) == 2 and set(frame["condition"]) == {"pretrained", "scratch"}
    assert frame["seed"].tolist() == [2, 2] and frame["params.optim.lr"].tolist() == [0.001, 0.001]
    assert (frame["own_s"] == 9.0).all()
    assert data.cast_param("true") is True and data.cast_param("None") is None
    assert data.cast_param("3") == 3 and data.cast_param("resnet18") == "resnet18"


def test_bulk_histories_equal_per_run_histories(synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _, ids = synthetic
    run_ids = ids["scratch"] + ids["pretrained"]
    keys = ["val/audio-image/accuracy", schema.TIME_EPOCH]
    bulk = histories.fetch_histories(client, run_ids, keys, max_workers=4)
    per_run = pd.DataFrame(
        [
            histories._point(r, m)
            for r in run_ids
            for k in keys
            for m in client.get_metric_history(r, k)
        ]
    ).sort_values(["run_id", "key", "step", "timestamp"], ignore_index=True)
    pd.testing.assert_frame_equal(bulk, per_run[histories.HISTORY_COLUMNS])
    assert len(bulk) == len(run_ids) * len(keys) * 4
    monkeypatch.setattr(histories, "BULK_MAX_RESULTS", 7)  # every bulk answer is "truncated": split
    pd.testing.assert_frame_equal(histories.fetch_histories(client, run_ids, keys), bulk)


def test_lineage_names_the_pretrain_runs_and_their_cost(synthetic) -> None:
    client, experiment_id, ids = synthetic
    runs = data.select_runs(client, data.Selection((experiment_id,)))
    lineage = data.lineage_frame(client, runs)
    assert len(lineage) == 2 * len(ids["pretrained"])  # scratch runs consumed nothing
    assert set(lineage["pretrain_run_id"]) == set(ids["pretrain"])
    assert sorted(lineage.groupby("modality")["pretrain_s"].first()) == [20.0, 30.0]
    client.delete_run(ids["pretrain"][0])
    client._tracking_client.store._hard_delete_run(ids["pretrain"][0])
    with pytest.raises(AnalysisInputError, match="no longer exist"):
        data.lineage_frame(client, runs)


def test_analysis_run_traces_every_number_to_run_ids(synthetic, tmp_path: Path) -> None:
    client, experiment_id, ids = synthetic
    result = analyze(
        experiment="avdigits", settings=AnalysisSettings(rope=0.005), output_dir=tmp_path / "out"
    )
    run = client.get_run(result.run_id)
    assert run.data.tags[schema.STAGE] == "analysis" and run.info.experiment_id == experiment_id
    assert run.data.params["analysis.correction"] == "bonferroni"
    comparison = pd.read_csv(tmp_path / "out/tables/comparison.csv")
    assert len(comparison) == 3 * 2  # patterns × metrics: one family
    for row in comparison.to_dict("records"):
        key = schema.metric_key("test", row["pattern"], row["metric"])
        a = [client.get_run(r).data.metrics[key] for r in row["run_ids_a"].split(";")]
        b = [client.get_run(r).data.metrics[key] for r in row["run_ids_b"].split(";")]
        assert row["mean_a"] == pytest.approx(sum(a) / len(a))
        assert row["delta"] == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
        where = f"test/{row['pattern']}/{row['metric']}"
        assert run.data.metrics[f"delta/{where}"] == pytest.approx(row["delta"])
        assert run.data.metrics[f"p_adjusted/{where}"] == pytest.approx(row["p_adjusted"])
        assert row["verdict"] == "pretrained better"  # effect 0.05, tiny noise, 8 seeds
    values = pd.read_csv(tmp_path / "out/inputs/values.csv")
    assert set(values["run_id"]) == set(ids["scratch"] + ids["pretrained"])
    meta = json.loads((tmp_path / "out/meta.json").read_text())
    assert meta["rng_seed"] == 0 and meta["versions"]["scipy"] and meta["pairing"] == "seed"
    artifacts = {f.path for f in client.list_artifacts(result.run_id, "analysis")}
    assert {
        "analysis/report.md",
        "analysis/report.tex",
        "analysis/table.md",
        "analysis/meta.json",
        "analysis/figures",
        "analysis/tables",
        "analysis/inputs",
    } <= artifacts
    figures = {Path(f.path).name for f in client.list_artifacts(result.run_id, "analysis/figures")}
    assert figures == {
        "forest.png",
        "learning_curves.png",
        "time_to_threshold.png",
        "cost.png",
        "value_vs_compute.png",
    }
    report = result.report
    assert "Kaplan–Meier" in report and "Break-even" in report and "Table 7.1 style" in report
    assert "\\begin{table}" in (tmp_path / "out/report.tex").read_text()
    # pretrained converges faster: every pretrained run reaches the threshold first
    survival = result.results.survival["epochs"].summary.set_index("condition")["median"]
    assert survival["pretrained"] < survival["scratch"]
    assert run.data.metrics["cost/extra_pct"] > 0  # pretraining is charged


def test_bad_selections_fail_clearly(synthetic) -> None:
    with pytest.raises(AnalysisInputError, match="experiment='nope' not found.*avdigits"):
        analyze(experiment="nope")
    with pytest.raises(AnalysisInputError, match="not a valid MLflow search filter"):
        analyze(experiment="avdigits", filter_string="params.x ~~ 3")
    with pytest.raises(AnalysisInputError, match="no FINISHED multimodal runs"):
        analyze(experiment="avdigits", filter_string="tags.`tsp.seed` = '99'")
    with pytest.raises(AnalysisInputError, match="no 'test' values for metric"):
        analyze(experiment="avdigits", settings=AnalysisSettings(metrics=("bogus",)), log=False)
    with pytest.raises(AnalysisInputError, match="correction='bonferoni' is unknown"):
        AnalysisSettings(correction="bonferoni")


def test_runs_not_finished_are_named_with_their_reason(synthetic, tmp_path: Path) -> None:
    """Defect: FAILED and RUNNING runs inside the selection were left out without a word."""
    client, experiment_id, ids = synthetic
    failed, running = ids["pretrained"][0], ids["scratch"][1]
    client.set_terminated(failed, status="FAILED")
    client.set_tag(failed, schema.ERROR, "TrainingDiverged: loss is NaN at epoch 3")
    client.update_run(running, status="RUNNING")
    result = analyze(experiment="avdigits", log=False)
    left = result.results.left_out.set_index("run_id")
    assert left.loc[failed, "reason"] == "FAILED: TrainingDiverged: loss is NaN at epoch 3"
    assert left.loc[running, "reason"].startswith("still RUNNING")
    # their partners lost a pair: named in the rows, as "no partner seed"
    partners = left[left["reason"] == "no partner seed"]
    assert {ids["scratch"][0], ids["pretrained"][1]} <= set(partners.index)
    row = result.results.comparison.iloc[0]
    assert row["n_pairs"] == 6 and failed not in row["run_ids_a"]
    assert "left out: 1 run(s), FAILED: TrainingDiverged" in "\n".join(
        __import__("analysis.report", fromlist=["x"]).left_out_lines(result.results)
    )
    assert "## Runs left out" in result.report


def test_a_malformed_seed_tag_is_one_line_naming_the_run(synthetic) -> None:
    """Defect: tsp.seed = "1.0" crashed with ValueError: invalid literal for int()."""
    client, _, ids = synthetic
    client.set_tag(ids["scratch"][2], schema.SEED, "1.0")
    with pytest.raises(
        AnalysisInputError, match=rf"run {ids['scratch'][2]} has tag tsp.seed='1.0'"
    ):
        analyze(experiment="avdigits", log=False)


def test_every_table_traces_its_numbers_to_run_ids(synthetic, tmp_path: Path) -> None:
    """Defect: nine tables carried no run ids at all."""
    _, _, ids = synthetic
    analyze(experiment="avdigits", settings=AnalysisSettings(rope=0.005), output_dir=tmp_path / "o")
    fusion = set(ids["scratch"] + ids["pretrained"])
    for name in (
        "summary",
        "cost_summary",
        "break_even",
        "efficiency",
        "multimodal_summary",
        "survival_epochs",
        "survival_epochs_summary",
        "curve_bands",
        "aggregate",
        "comparison",
    ):
        table = pd.read_csv(tmp_path / "o" / "tables" / f"{name}.csv")
        columns = [c for c in table.columns if c.startswith("run_ids")]
        assert columns, name
        named = {i for c in columns for cell in table[c].dropna() for i in str(cell).split(";")}
        assert named and named <= fusion, name
