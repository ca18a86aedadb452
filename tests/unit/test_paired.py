"""Paired pretrained-vs-scratch comparison: checked against scipy and simulated truth."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.paired import paired_comparison
from analysis.report import markdown_table


def frame(values: dict[tuple[str, int], float], pattern: str = "audio-image") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"condition": c, "seed": s, "pattern": pattern, "value": v}
            for (c, s), v in values.items()
        ]
    )


def test_paired_delta_ci_and_p_match_scipy() -> None:
    rng = np.random.default_rng(1)
    scratch = rng.normal(0.7, 0.05, 6)
    pretrained = scratch + rng.normal(0.03, 0.01, 6)
    data = {("scratch", s): v for s, v in enumerate(scratch)} | {
        ("pretrained", s): v for s, v in enumerate(pretrained)
    }
    row = paired_comparison(frame(data)).iloc[0]
    diff = pretrained - scratch
    low, high = stats.t.interval(0.95, 5, loc=diff.mean(), scale=stats.sem(diff))
    assert row["n"] == 6 and row["n_unmatched"] == 0
    assert row["delta"] == pytest.approx(diff.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["p_value"] == pytest.approx(stats.ttest_rel(pretrained, scratch).pvalue)
    assert row["sd_a"] == pytest.approx(np.std(pretrained, ddof=1))


def test_ci_covers_the_true_effect_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    trials = 400
    for _ in range(trials):
        base = rng.normal(0.6, 0.05, 5)
        data = {("scratch", s): v for s, v in enumerate(base)}
        data |= {("pretrained", s): v + 0.02 + rng.normal(0, 0.02) for s, v in enumerate(base)}
        row = paired_comparison(frame(data)).iloc[0]
        covered += row["ci_low"] <= 0.02 <= row["ci_high"]
    assert 0.92 <= covered / trials <= 0.98


def test_unmatched_seeds_are_dropped_and_counted() -> None:
    data = {("scratch", 0): 0.5, ("scratch", 1): 0.6, ("scratch", 2): 0.7,
            ("pretrained", 0): 0.55, ("pretrained", 1): 0.62, ("pretrained", 5): 0.9}  # fmt: skip
    row = paired_comparison(frame(data)).iloc[0]
    assert row["n"] == 2 and row["n_unmatched"] == 2
    assert row["delta"] == pytest.approx(((0.55 - 0.5) + (0.62 - 0.6)) / 2)


def test_repeated_seeds_of_one_arm_are_averaged_and_reported() -> None:
    rows = frame(
        {("scratch", 0): 0.5, ("scratch", 1): 0.6, ("pretrained", 0): 0.7, ("pretrained", 1): 0.8}
    )
    extra = pd.DataFrame(
        [{"condition": "scratch", "seed": 0, "pattern": "audio-image", "value": 0.7}]
    )
    row = paired_comparison(pd.concat([rows, extra])).iloc[0]
    assert row["n"] == 2 and row["n_averaged"] == 1
    assert row["mean_b"] == pytest.approx((0.6 + 0.6) / 2)  # seed 0 scratch = mean(0.5, 0.7)
    assert "1 runs repeated an (arm, seed) pair" in markdown_table(
        paired_comparison(pd.concat([rows, extra])), metric="acc"
    )


def test_small_and_degenerate_samples_report_nan_not_false_precision() -> None:
    one = paired_comparison(frame({("scratch", 0): 0.5, ("pretrained", 0): 0.6})).iloc[0]
    assert one["n"] == 1 and math.isnan(one["ci_low"]) and math.isnan(one["p_value"])
    same = frame(
        {("scratch", s): 0.5 + s / 10 for s in range(4)}
        | {("pretrained", s): 0.6 + s / 10 for s in range(4)}
    )
    row = paired_comparison(same).iloc[0]
    assert row["ci_low"] == pytest.approx(0.1) and row["ci_high"] == pytest.approx(0.1)
    assert math.isnan(row["p_value"])
    table = markdown_table(
        paired_comparison(frame({("scratch", 0): 0.5, ("pretrained", 0): 0.6})), metric="acc"
    )
    assert "Fewer than 2 paired seeds" in table


def test_patterns_are_compared_separately() -> None:
    data = pd.concat(
        [
            frame(
                {("scratch", s): 0.5 for s in range(3)}
                | {("pretrained", s): 0.5 + 0.1 * (s + 1) for s in range(3)},
                "audio",
            ),
            frame(
                {("scratch", s): 0.8 - 0.1 * s for s in range(3)}
                | {("pretrained", s): 0.8 for s in range(3)},
                "image",
            ),
        ]
    )
    result = paired_comparison(data).set_index("pattern")
    assert result.loc["audio", "delta"] == pytest.approx(0.2)
    assert result.loc["image", "delta"] == pytest.approx(0.1)
