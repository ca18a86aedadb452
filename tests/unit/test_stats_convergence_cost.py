"""Convergence (censoring, AULC, bands), k-condition comparisons, cost and fusion gain."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisInputError
from analysis.stats import (
    area_under_curve,
    break_even,
    compare_many,
    compare_time_to_threshold,
    cost_summary,
    cost_table,
    curve_bands,
    fusion_gain,
    time_to_threshold,
    value_at_equal_compute,
)


def curves(runs: dict[str, tuple[str, int, list[float]]], epoch_s: float = 2.0) -> pd.DataFrame:
    rows = []
    for run_id, (condition, seed, values) in runs.items():
        for epoch, value in enumerate(values, start=1):
            rows.append(
                {
                    "run_id": run_id,
                    "condition": condition,
                    "seed": seed,
                    "epoch": epoch,
                    "value": value,
                    "seconds": epoch * epoch_s,
                }
            )
    return pd.DataFrame(rows)


def test_time_to_threshold_marks_runs_that_never_reach_it_as_censored() -> None:
    data = curves({"r1": ("pretrained", 0, [0.5, 0.8, 0.9]), "r2": ("scratch", 0, [0.3, 0.5, 0.6])})
    ttt = time_to_threshold(data, 0.8).set_index("run_id")
    assert ttt.loc["r1", ["reached", "epochs", "seconds"]].tolist() == [True, 2, 4.0]
    assert ttt.loc["r2", ["reached", "epochs", "seconds"]].tolist() == [False, 3, 6.0]


def test_kaplan_meier_median_treats_censoring_as_censoring() -> None:
    """Events at 2 and 4, one run censored at 3: S(2)=2/3, S(4)=0, median 4. Counting the
    censored run as an event at 3 would give median 3."""
    ttt = pd.DataFrame(
        {
            "run_id": list("abcdef"),
            "condition": ["pretrained"] * 3 + ["scratch"] * 3,
            "seed": [0, 1, 2] * 2,
            "reached": [True, False, True, False, False, False],
            "epochs": [2, 3, 4, 5, 5, 5],
            "seconds": [2.0, 3.0, 4.0, 5.0, 5.0, 5.0],
        }
    )
    result = compare_time_to_threshold(ttt, a="pretrained", b="scratch")
    summary = result.summary.set_index("condition")
    assert summary.loc["pretrained", "median"] == 4.0
    assert summary.loc["pretrained", "censored"] == 1
    assert summary.loc["scratch", "median"] == math.inf  # nobody got there
    km = result.curves[result.curves["condition"] == "pretrained"].set_index("time")["survival"]
    assert km[2.0] == pytest.approx(2 / 3) and km[4.0] == pytest.approx(0.0)
    assert 0 < result.p_value < 1


def test_logrank_separates_fast_from_never_and_reports_no_events_clearly() -> None:
    fast = {f"p{s}": ("pretrained", s, [0.9, 0.95]) for s in range(8)}
    slow = {f"s{s}": ("scratch", s, [0.2, 0.3]) for s in range(8)}
    ttt = time_to_threshold(curves(fast | slow), 0.8)
    assert compare_time_to_threshold(ttt, a="pretrained", b="scratch").p_value < 0.01
    none = time_to_threshold(
        curves(slow | {f"q{s}": ("pretrained", s, [0.1]) for s in range(3)}), 0.8
    )
    result = compare_time_to_threshold(none, a="pretrained", b="scratch")
    assert math.isnan(result.p_value) and result.note == "no run reached the threshold"
    with pytest.raises(AnalysisInputError, match="no runs with condition='x'"):
        compare_time_to_threshold(ttt, a="x", b="scratch")


def test_area_under_the_curve_is_the_curves_average_height() -> None:
    data = curves({"r": ("scratch", 0, [0.0, 0.5, 1.0]), "one": ("scratch", 1, [0.7])})
    aulc = area_under_curve(data).set_index("run_id")["value"]
    assert aulc["r"] == pytest.approx(0.5) and aulc["one"] == pytest.approx(0.7)


def test_curve_bands_mark_only_epochs_that_differ() -> None:
    rng = np.random.default_rng(0)
    runs = {}
    for s in range(8):
        base = rng.normal(0.5, 0.02)
        runs[f"s{s}"] = ("scratch", s, [base, base + 0.1, base + 0.2])
        # pretrained: same at epoch 1, far ahead at epoch 3
        runs[f"p{s}"] = (
            "pretrained",
            s,
            [
                base + rng.normal(0, 0.01),
                base + 0.1 + rng.normal(0, 0.01),
                base + 0.4 + rng.normal(0, 0.01),
            ],
        )
    result = curve_bands(curves(runs), a="pretrained", b="scratch")
    significant = result.differences.set_index("epoch")["significant"]
    assert significant[3] and not significant[1]
    assert (
        set(result.bands["condition"]) == {"pretrained", "scratch"}
        and (result.bands["n"] == 8).all()
    )


def test_compare_many_ranks_friedman_and_the_published_critical_difference() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(10):
        block = rng.normal(0.7, 0.05)
        for name, shift in (("attention", 0.08), ("concat", 0.0), ("sum", 0.001), ("max", -0.001)):
            rows.append(
                {
                    "condition": name,
                    "seed": seed,
                    "pattern": "audio-image",
                    "metric": "accuracy",
                    "value": block + shift + rng.normal(0, 0.005),
                }
            )
    result = compare_many(pd.DataFrame(rows))
    omnibus = result.omnibus.iloc[0]
    assert omnibus["p_value"] < 0.001 and omnibus["n_blocks"] == 10
    # Demšar (2006), Table 5: q_0.05 = 2.569 for k = 4 (Nemenyi)
    assert omnibus["critical_difference"] == pytest.approx(2.569 * math.sqrt(4 * 5 / 60), abs=1e-3)
    ranks = result.ranks.set_index("condition")["avg_rank"]
    assert ranks["attention"] == 1.0 and ranks.sum() == pytest.approx(10)  # 1+2+3+4
    pairs = result.pairwise.set_index(["a", "b"])
    assert pairs.loc[("attention", "concat"), "significant"]
    assert not pairs.loc[("concat", "max"), "significant"]
    assert any("attention" not in c and len(c.split(",")) >= 2 for c in result.cliques["members"])
    with pytest.raises(AnalysisInputError, match="at least 3 values"):
        compare_many(pd.DataFrame(rows).query("condition in ['concat', 'sum']"))


def test_cost_counts_pretraining_fully_and_amortised_exactly_once() -> None:
    fusion = pd.DataFrame(
        {
            "run_id": ["p0", "p1", "p2", "s0"],
            "condition": ["pretrained"] * 3 + ["scratch"],
            "seed": [0, 1, 2, 0],
            "own_s": [10.0, 12.0, 11.0, 15.0],
        }
    )
    lineage = pd.DataFrame(
        {
            "run_id": ["p0", "p0", "p1", "p1", "p2", "p2"],
            "modality": ["audio", "image"] * 3,
            "pretrain_run_id": ["A", "I"] * 3,
            "pretrain_s": [30.0, 60.0] * 3,
        }
    )
    cost = cost_table(fusion, lineage).set_index("run_id")
    assert cost.loc["p0", "pretrain_s"] == 90.0 and cost.loc["p0", "total_s"] == 100.0
    assert (
        cost.loc["p0", "pretrain_amortised_s"] == pytest.approx(30.0)
        and cost.loc["p0", "reuses"] == 3
    )
    assert cost.loc["s0", "pretrain_s"] == 0.0 and cost.loc["s0", "total_s"] == 15.0
    # amortised totals add up to own time plus each pretraining second once
    assert cost["total_amortised_s"].sum() == pytest.approx(fusion["own_s"].sum() + 90.0)
    summary = cost_summary(cost.reset_index(), a="pretrained", b="scratch").set_index("condition")
    assert summary.loc["pretrained", "extra_pct"] == pytest.approx((101.0 - 15.0) / 15.0 * 100)
    assert break_even(90.0, 4.0) == pytest.approx(22.5)
    assert break_even(90.0, -1.0) == math.inf


def test_value_at_equal_compute_charges_pretraining_to_the_clock() -> None:
    data = curves(
        {"p0": ("pretrained", 0, [0.8, 0.9, 0.95]), "s0": ("scratch", 0, [0.3, 0.6, 0.7])}
    )
    cost = pd.DataFrame(
        {"run_id": ["p0", "s0"], "pretrain_s": [3.0, 0.0], "pretrain_amortised_s": [1.0, 0.0]}
    )
    eq = value_at_equal_compute(data, cost, a="pretrained", b="scratch").set_index(
        ["basis", "run_id"]
    )
    # full: budget = min(3 + 6, 6) = 6 s; pretrained finished epoch 1 (at 5 s) only
    assert eq.loc[("full", "p0"), ["budget_s", "epochs", "value"]].tolist() == [6.0, 1, 0.8]
    assert eq.loc[("full", "s0"), "value"] == 0.7
    # amortised: budget 6 s; pretrained at 3 s and 5 s
    assert eq.loc[("amortised", "p0"), ["epochs", "value"]].tolist() == [2, 0.9]


def test_fusion_gain_and_robustness_per_run() -> None:
    values = pd.DataFrame(
        {
            "run_id": "r",
            "condition": "pretrained",
            "seed": 0,
            "pattern": ["audio", "image", "audio-image"] * 2,
            "metric": ["accuracy"] * 3 + ["mae"] * 3,
            "value": [0.6, 0.8, 0.9, 0.5, 0.4, 0.3],
        }
    )
    gain = fusion_gain(values).set_index(["metric", "quantity"])["value"]
    assert gain[("accuracy", "fusion_gain")] == pytest.approx(0.1)
    assert gain[("accuracy", "robustness/audio")] == pytest.approx(0.6 / 0.9)
    assert gain[("mae", "fusion_gain")] == pytest.approx(0.1)  # lower is better: 0.4 − 0.3
