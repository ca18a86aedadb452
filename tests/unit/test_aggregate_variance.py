"""rliable's aggregates and the seeds-vs-test-set variance split, against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats.aggregate import aggregate_across_tasks
from analysis.stats.variance import variance_components


def scores(rng: np.random.Generator, shift: float) -> pd.DataFrame:
    rows = []
    for pattern, level in (("audio", 0.4), ("image", 0.6), ("audio-image", 0.8)):
        for seed in range(6):
            for arm, extra in (("pretrained", shift), ("scratch", 0.0)):
                rows.append(
                    {
                        "run_id": f"{arm}{seed}",
                        "condition": arm,
                        "seed": seed,
                        "pattern": pattern,
                        "metric": "accuracy",
                        "value": level + extra + rng.normal(0, 0.02),
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_iqm_and_probability_of_improvement_follow_rliable() -> None:
    data = scores(np.random.default_rng(0), 0.03)
    row = aggregate_across_tasks(data, a="pretrained", b="scratch").iloc[0]
    a = data[data["condition"] == "pretrained"]["value"]
    b = data[data["condition"] == "scratch"]["value"]
    assert row["iqm_a"] == pytest.approx(stats.trim_mean(a, 0.25))
    assert row["iqm_b"] == pytest.approx(stats.trim_mean(b, 0.25))
    per_task = []
    for _, task in data.groupby("pattern"):
        x = task[task["condition"] == "pretrained"]["value"].to_numpy()
        y = task[task["condition"] == "scratch"]["value"].to_numpy()
        per_task.append(stats.mannwhitneyu(x, y).statistic / (len(x) * len(y)))
    assert row["p_improvement"] == pytest.approx(np.mean(per_task))
    assert row["p_improvement_low"] <= row["p_improvement"] <= row["p_improvement_high"]
    assert row["iqm_delta_low"] > 0  # a clear shift: the interval excludes 0
    assert row["tasks"] == 3 and row["n_runs_a"] == 6
    null = aggregate_across_tasks(
        scores(np.random.default_rng(1), 0.0), a="pretrained", b="scratch"
    ).iloc[0]
    assert null["p_improvement_low"] < 0.5 < null["p_improvement_high"]


def test_the_test_set_share_is_the_spread_of_the_shared_resamples() -> None:
    rng = np.random.default_rng(2)
    resamples = 50
    boot = {}
    for seed in range(4):
        common = rng.normal(0, 0.01, resamples)  # what a resample does to every run
        for arm, shift in (("a", 0.05), ("b", 0.0)):
            boot[f"{arm}{seed}"] = {
                "audio": {"accuracy": list(0.7 + shift + common + rng.normal(0, 0.005, resamples))}
            }
    comparison = pd.DataFrame(
        [
            {
                "pattern": "audio",
                "metric": "accuracy",
                "design": "paired",
                "n_pairs": 4,
                "n_a": 4,
                "n_b": 4,
                "delta": 0.05,
                "se": 0.01,
                "run_ids_a": "a0;a1;a2;a3",
                "run_ids_b": "b0;b1;b2;b3",
            }
        ]
    )
    row = variance_components(comparison, boot, by=("pattern", "metric")).iloc[0]
    a = np.mean([boot[f"a{s}"]["audio"]["accuracy"] for s in range(4)], axis=0)
    b = np.mean([boot[f"b{s}"]["audio"]["accuracy"] for s in range(4)], axis=0)
    assert row["se_test_set"] == pytest.approx(np.std(a - b, ddof=1))
    assert row["se_total"] == pytest.approx(np.hypot(0.01, row["se_test_set"]))
    assert 0 < row["test_set_share"] < 1 and row["resamples"] == resamples
    del boot["b3"]  # a run without a bootstrap: no row, rather than a wrong one
    assert variance_components(comparison, boot, by=("pattern", "metric")).empty
