"""compare_two: checked against scipy/statsmodels, simulated truth and degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint

from analysis.errors import AnalysisInputError
from analysis.stats import adjust_pvalues, compare_two, iqm, mean_interval, summarize
from analysis.stats.compare import (
    exact_test_min_n,
    newcombe_auc_interval,
    seeds_needed,
    wilson_interval,
)


def frame(a: np.ndarray, b: np.ndarray, *, shift_b_seeds: int = 0, pattern: str = "audio-image",
          metric: str = "accuracy") -> pd.DataFrame:  # fmt: skip
    rows = [
        {"run_id": f"a{s}", "condition": "pretrained", "seed": s, "value": v}
        for s, v in enumerate(a)
    ]
    rows += [{"run_id": f"b{s}", "condition": "scratch", "seed": s + shift_b_seeds, "value": v}
             for s, v in enumerate(b)]  # fmt: skip
    return pd.DataFrame(rows).assign(pattern=pattern, metric=metric)


def one(data: pd.DataFrame, **kwargs: object) -> pd.Series:
    return compare_two(data, a="pretrained", b="scratch", **kwargs).iloc[0]


def paired_sample(rng: np.random.Generator, n: int, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Seeds share a random effect (data order, init), as real paired runs do."""
    seed_effect = rng.normal(0.7, 0.05, n)
    return seed_effect + effect * 0.02 + rng.normal(0, 0.02, n), seed_effect + rng.normal(
        0, 0.02, n
    )


def test_paired_estimates_match_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = paired_sample(rng, 8, 1.0)
    row = one(frame(a, b))
    d = a - b
    assert row["design"] == "paired" and row["n_pairs"] == 8 and row["test"] == "exact sign-flip"
    assert row["delta"] == pytest.approx(d.mean())
    low, high = stats.t.interval(0.95, 7, loc=d.mean(), scale=stats.sem(d))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert row["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert row["r_arms"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    wins = (d > 0).sum()
    assert row["p_superiority"] == pytest.approx(wins / 8)
    assert (row["ps_low"], row["ps_high"]) == pytest.approx(
        proportion_confint(wins, 8, method="wilson")
    )
    # the exact sign-flip p, enumerated by hand over all 2^8 sign vectors
    signs = np.array(np.meshgrid(*[[-1, 1]] * 8)).reshape(8, -1).T
    null = (signs * d).mean(axis=1)
    expected = min(
        1.0, 2 * min((null >= d.mean() - 1e-15).mean(), (null <= d.mean() + 1e-15).mean())
    )
    assert row["p_value"] == pytest.approx(expected)


def test_welch_estimates_match_scipy_when_seeds_do_not_match() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.75, 0.03, 6), rng.normal(0.70, 0.05, 7)
    row = one(frame(a, b, shift_b_seeds=100))
    assert row["design"] == "welch" and row["n_pairs"] == 0
    test = stats.ttest_ind(a, b, equal_var=False)
    assert row["p_t"] == pytest.approx(test.pvalue)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(test.confidence_interval(0.95)))
    pooled = math.sqrt((5 * a.var(ddof=1) + 6 * b.var(ddof=1)) / 11)
    assert row["effect_size"] == pytest.approx(
        (a.mean() - b.mean()) / pooled * (1 - 3 / (4 * 13 - 9))
    )
    u = stats.mannwhitneyu(a, b).statistic
    assert row["p_superiority"] == pytest.approx(u / (6 * 7))
    assert row["p_value"] == pytest.approx(
        stats.permutation_test(
            (a, b), lambda x, y: x.mean() - y.mean(), n_resamples=math.comb(13, 6)
        ).pvalue
    )
    assert row["p_floor"] == pytest.approx(2 / math.comb(13, 6))


def test_null_calibration_paired_and_welch() -> None:
    """A/A comparisons: uniform p-values (KS) and a false-positive rate ≤ α + 0.02."""
    rng = np.random.default_rng(3)
    samplers = {
        "paired": lambda: frame(*paired_sample(rng, 10, 0.0)),
        "welch": lambda: frame(
            rng.normal(0.7, 0.03, 8), rng.normal(0.7, 0.03, 8), shift_b_seeds=100
        ),
    }
    for design, sample in samplers.items():
        rows = [one(sample()) for _ in range(250)]
        assert {r["design"] for r in rows} == {design}
        for column in ("p_value", "p_t"):
            p = np.array([r[column] for r in rows])
            assert stats.kstest(p, "uniform").pvalue > 0.01, (design, column)
            assert (p < 0.05).mean() <= 0.05 + 0.02, (design, column)


def test_power_matches_the_power_calculation() -> None:
    rng = np.random.default_rng(4)
    n, d_true, reps = 10, 1.0, 400
    predicted = TTestPower().power(effect_size=d_true, nobs=n, alpha=0.05)
    hits_t = hits_exact = 0
    for _ in range(reps):
        diff = rng.normal(d_true, 1.0, n)  # differences with standardised effect d_true
        row = one(frame(diff, np.zeros(n)))
        hits_t += row["p_t"] < 0.05
        hits_exact += row["p_value"] < 0.05
    se = math.sqrt(predicted * (1 - predicted) / reps)
    assert abs(hits_t / reps - predicted) < 3.5 * se
    assert abs(hits_exact / reps - predicted) < 3.5 * se + 0.03  # the exact test is a bit weaker


def test_exact_floor_and_seeds_needed_follow_the_family_size() -> None:
    """STATS.md: at n=5 the floor is 0.0625; Holm over 3 patterns needs n ≥ 7."""
    rng = np.random.default_rng(5)
    rows = []
    for pattern in ("audio", "image", "audio-image"):
        a, b = paired_sample(rng, 5, 3.0)
        rows.append(frame(a, b, pattern=pattern))
    result = compare_two(pd.concat(rows), a="pretrained", b="scratch")
    assert (result["p_floor"] == 2 / 2**5).all()
    assert (result["p_value"] >= 0.0625).all()  # no result beats the floor
    assert exact_test_min_n(0.05 / 3, paired=True) == 7
    assert (result["seeds_needed"] >= 7).all()
    assert (result["mde"] == math.inf).all()  # the floor is above α/3: nothing is detectable
    # the power search agrees with the textbook figures, and a huge effect needs only the floor
    assert seeds_needed(1.0, 0.1, 0.0, 0.05, 0.8, paired=True) == math.ceil(
        TTestPower().solve_power(effect_size=1.0, alpha=0.05, power=0.8)
    )
    assert seeds_needed(0.5, 0.1, 0.0, 0.05, 0.8, paired=False) == 64  # Cohen: 64 per group
    assert seeds_needed(50.0, 0.1, 0.0, 0.05, 0.8, paired=True) == exact_test_min_n(
        0.05, paired=True
    )
    assert result["verdict"].str.startswith("inconclusive at n=5; need ≈").all()


def test_a_clear_effect_with_enough_seeds_is_called_better_and_loss_worse() -> None:
    rng = np.random.default_rng(6)
    a, b = paired_sample(rng, 10, 5.0)
    assert one(frame(a, b))["verdict"] == "better"
    assert one(frame(a, b, metric="loss"))["verdict"] == "worse"  # higher loss is worse


def test_degenerate_inputs_give_clear_results_not_nan_tables() -> None:
    base = np.array([0.7, 0.72, 0.69, 0.71, 0.73])
    same_shift = one(frame(base + 0.02, base))
    assert same_shift["ci_low"] == same_shift["ci_high"] == pytest.approx(0.02)
    assert same_shift["effect_size"] == math.inf
    assert same_shift["p_value"] == pytest.approx(2 / 2**5)
    assert same_shift["verdict"].startswith("inconclusive at n=5; need ≈")

    identical = one(frame(base, base))
    assert identical["p_value"] == 1.0 and identical["delta"] == 0.0
    assert identical["verdict"] == "equivalent within ±0.01"

    single = one(frame(base[:1] + 0.1, base[:1]))
    assert single["design"] == "too few runs" and "n=1" in single["verdict"]
    assert single["delta"] == pytest.approx(0.1)

    with pytest.raises(AnalysisInputError, match="no runs with condition='pretrained'.*scratch"):
        compare_two(frame(base, base).query("condition == 'scratch'"), a="pretrained", b="scratch")
    partial = pd.concat(
        [frame(base, base), frame(base, base, pattern="audio").query("condition == 'scratch'")]
    )
    row = compare_two(partial, a="pretrained", b="scratch").set_index("pattern").loc["audio"]
    assert row["verdict"] == "no pretrained runs in this group"


def test_unmatched_seeds_are_dropped_and_repeats_averaged() -> None:
    data = frame(np.array([0.55, 0.62, 0.9, 0.7]), np.array([0.5, 0.6, 0.7]))
    data.loc[data["run_id"] == "a2", "seed"] = 9  # no partner
    repeat = data[data["run_id"] == "a3"].assign(run_id="a3bis", seed=2, value=0.8)
    data.loc[data["run_id"] == "a3", "seed"] = 2
    row = one(pd.concat([data, repeat]))
    assert row["n_pairs"] == 3 and row["n_unmatched"] == 1 and row["n_averaged"] == 1
    assert row["delta"] == pytest.approx(((0.55 - 0.5) + (0.62 - 0.6) + (0.75 - 0.7)) / 3)
    assert set(row["run_ids_a"].split(";")) == {"a0", "a1", "a2", "a3", "a3bis"}


def test_paired_ci_covers_the_true_effect_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        a, b = paired_sample(rng, 5, 1.0)  # true Δ = 0.02
        row = one(frame(a, b))
        covered += row["ci_low"] <= 0.02 <= row["ci_high"]
    assert 0.92 <= covered / 400 <= 0.98


def test_holm_bh_by_match_statsmodels_and_keep_nan() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    finite = p[~np.isnan(p)]
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh"), ("by", "fdr_by")):
        adjusted = adjust_pvalues(p, ours)
        assert np.isnan(adjusted[2])
        assert adjusted[~np.isnan(p)] == pytest.approx(multipletests(finite, method=theirs)[1])
    rng = np.random.default_rng(8)
    rows = [
        frame(*paired_sample(rng, 6, 1.0), pattern=pt) for pt in ("audio", "image", "audio-image")
    ]
    result = compare_two(pd.concat(rows), a="pretrained", b="scratch")
    assert result["p_adjusted"].to_numpy() == pytest.approx(
        multipletests(result["p_value"], method="holm")[1]
    )


def test_probability_intervals_stay_honest_at_the_extremes() -> None:
    low, high = wilson_interval(5, 5)
    assert high == 1.0 and 0.5 < low < 0.6  # 5/5 wins is not certainty
    low, high = newcombe_auc_interval(1.0, 5, 5)
    assert high == 1.0 and 0.6 < low < 1.0
    low, high = newcombe_auc_interval(0.5, 8, 8)
    assert low < 0.5 < high and high - 0.5 == pytest.approx(0.5 - low, abs=1e-6)


def test_summarize_uses_t_at_small_n_and_bootstrap_above() -> None:
    rng = np.random.default_rng(9)
    small = rng.normal(0, 1, 8)
    low, high, method = mean_interval(small)
    assert method == "t"
    assert (low, high) == pytest.approx(
        stats.t.interval(0.95, 7, loc=small.mean(), scale=stats.sem(small))
    )
    big = rng.normal(0, 1, 60)
    low, high, method = mean_interval(big)
    assert method == "bootstrap" and low < big.mean() < high
    assert mean_interval(np.full(30, 0.5))[:2] == (0.5, 0.5)  # degenerate: no NaN
    assert iqm([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(
        stats.trim_mean([1, 2, 3, 4, 100, 5, 6, 7], 0.25)
    )
    table = summarize(pd.DataFrame({"condition": ["x"] * 8 + ["y"], "value": [*small, 1.0]}))
    assert list(table["n"]) == [8, 1] and table.loc[1, "ci_method"] == "none"


def test_a_group_with_one_arm_does_not_break_the_others() -> None:
    """Found by `make pipeline`: a value-at-equal-compute basis where one arm had no value
    left `_n` NaN in one row, so every row's n became a float."""
    rows = [
        {"run_id": f"{basis}{cond}{s}", "condition": cond, "seed": s, "basis": basis,
         "value": 0.5 + 0.01 * s + 0.1 * (cond == "pretrained")}
        for basis in ("x", "y")
        for cond, seeds in (("pretrained", (0, 1)), ("scratch", (5, 6)))
        if not (basis == "y" and cond == "scratch")
        for s in seeds
    ]  # fmt: skip
    table = compare_two(pd.DataFrame(rows), a="pretrained", b="scratch", by=("basis",))
    design = dict(zip(table["basis"], table["design"], strict=True))
    assert design["x"] == "welch" and design["y"] != "welch"
