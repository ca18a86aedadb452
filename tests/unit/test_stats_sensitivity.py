"""Sensitivity statistics on frames whose answer is known by construction."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pandas as pd
import pytest

from analysis.stats.sensitivity import (
    compare_sensitivity,
    regrets,
    robustness_curve,
    sensitivity,
    verdict,
)

LRS = (1e-4, 3e-4, 1e-3, 3e-3)
BATCHES = (16, 32, 64, 128)


def grid_frame(rng: np.random.Generator, lr_effect: dict[str, float]) -> pd.DataFrame:
    """A 4 x 4 grid per condition; the value falls with |log lr - log 1e-3| times the
    condition's lr effect, plus a little noise. Batch size does nothing."""
    rows = []
    for condition, effect in lr_effect.items():
        for lr, batch in product(LRS, BATCHES):
            value = 0.9 - effect * abs(np.log10(lr) + 3) + rng.normal(0, 0.005)
            config = json.dumps({"optim.lr": lr, "trainer.batch_size": batch}, sort_keys=True)
            rows.append(
                {
                    "condition": condition,
                    "config": config,
                    "optim.lr": lr,
                    "trainer.batch_size": batch,
                    "value": value,
                }
            )
    return pd.DataFrame(rows)


def test_regret_is_the_distance_below_the_best_in_either_direction() -> None:
    frame = pd.DataFrame({"condition": ["a", "a", "a"], "value": [0.5, 0.7, 0.6]})
    assert regrets(frame, higher_is_better=True)["regret"].tolist() == pytest.approx([0.2, 0, 0.1])
    # Lower is better (MAE): the best is the smallest.
    assert regrets(frame, higher_is_better=False)["regret"].tolist() == pytest.approx([0, 0.2, 0.1])


def test_a_flat_condition_is_found_less_sensitive_paired_by_configuration() -> None:
    frame = grid_frame(np.random.default_rng(0), {"pretrained": 0.02, "scratch": 0.3})
    result = sensitivity(frame, params=["optim.lr", "trainer.batch_size"], higher_is_better=True)
    (row,) = result.comparisons.to_dict("records")
    assert row["a"] == "pretrained" and row["b"] == "scratch" and row["paired"]
    assert row["test"].startswith("Wilcoxon")
    assert row["ci_high"] < 0 and row["p_adjusted"] < 0.05 and row["delta_iqr"] < 0
    assert "pretrained is less sensitive" in verdict(row)
    # Per-parameter effects: lr moves scratch a lot, batch size (no effect) little.
    effects = result.effects.set_index(["condition", "param"])["effect"]
    assert effects["scratch", "optim.lr"] == pytest.approx(0.3, abs=0.01)  # 0.9 - 0.6
    assert effects["scratch", "trainer.batch_size"] < 0.05
    assert effects["pretrained", "optim.lr"] < effects["scratch", "optim.lr"]
    # Summary: best-1 is the best value; mean regret is mean(best - value).
    s = result.summary.set_index("condition")
    scratch = frame[frame.condition == "scratch"]["value"]
    assert s.loc["scratch", "best1_mean"] == pytest.approx(scratch.max())
    assert s.loc["scratch", "best3_mean"] == pytest.approx(scratch.nlargest(3).mean())
    assert s.loc["scratch", "mean_regret"] == pytest.approx((scratch.max() - scratch).mean())


def test_equal_sensitivity_is_not_called_a_difference() -> None:
    frame = grid_frame(np.random.default_rng(1), {"pretrained": 0.2, "scratch": 0.2})
    (row,) = sensitivity(frame, params=["optim.lr"], higher_is_better=True).comparisons.to_dict(
        "records"
    )
    assert row["ci_low"] < 0 < row["ci_high"]
    assert "no clear difference" in verdict(row)


def test_different_configurations_are_compared_unpaired() -> None:
    frame = grid_frame(np.random.default_rng(2), {"pretrained": 0.02, "scratch": 0.3})
    frame = frame[~((frame.condition == "scratch") & (frame["optim.lr"] == 1e-4))]
    row = compare_sensitivity(
        regrets(frame, higher_is_better=True), a="pretrained", b="scratch", higher_is_better=True
    )
    assert not row["paired"] and row["test"].startswith("Mann-Whitney")
    assert row["ci_high"] < 0 and row["p_value"] < 0.05
    assert row["spread_test_p"] < 0.05  # Brown-Forsythe sees the wider spread too


def test_robustness_curve_is_the_regret_cdf() -> None:
    frame = regrets(
        pd.DataFrame({"condition": ["a"] * 4, "value": [1.0, 0.9, 0.8, 0.5]}), higher_is_better=True
    )
    curve = robustness_curve(frame, points=6)  # deltas 0, .1, .2, .3, .4, .5
    assert curve["fraction"].tolist() == pytest.approx([0.25, 0.5, 0.75, 0.75, 0.75, 1.0])
