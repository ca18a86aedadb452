"""Hyperparameter sensitivity: how much a condition's result depends on its hyperparameters.

The input is one row per completed sweep trial: ``condition``, ``config`` (the sampled
hyperparameters as a canonical string), one column per searched parameter, and ``value``
(the objective). A condition is *sensitive* when many configurations fall far below its
best. Per condition we report the spread (SD, IQR, range), the mean of the best k, and
the **regret** of each configuration, ``best - value`` (sign-flipped when lower is
better). The robustness curve is the regret's empirical CDF: the fraction of
configurations within δ of the condition's best; the mean regret is the area above it.

Two conditions are compared on regret, paired by configuration when both ran the same
configurations (a grid sampler on one worker): the Wilcoxon signed-rank test on the
per-configuration regret differences. Otherwise unpaired: the Mann-Whitney U test on
regrets. Either way, bootstrap CIs of the differences of mean regret and of IQR, and the
Brown-Forsythe test of equal spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.multiplicity import adjust_pvalues

LEVELS_MAX = 12  # more distinct values than this: a continuous parameter (Spearman's rho)


@dataclass
class Sensitivity:
    summary: pd.DataFrame  # one row per condition
    effects: pd.DataFrame  # condition x parameter: main-effect range or Spearman rho
    levels: pd.DataFrame  # condition x parameter x level: mean value (few-level parameters)
    comparisons: pd.DataFrame  # one row per condition compared with the reference
    robustness: pd.DataFrame  # condition, delta, fraction within delta of the best
    regrets: pd.DataFrame  # the input with its regret column
    params: list[str]
    higher_is_better: bool


def regrets(frame: pd.DataFrame, *, higher_is_better: bool) -> pd.DataFrame:
    """The frame with ``regret`` = distance below the condition's best (always >= 0)."""
    sign = 1.0 if higher_is_better else -1.0
    best = frame.groupby("condition")["value"].transform("max" if higher_is_better else "min")
    return frame.assign(regret=sign * (best - frame["value"]))


def condition_summary(
    frame: pd.DataFrame, *, higher_is_better: bool, ks: Sequence[int] = (1, 3, 5)
) -> pd.DataFrame:
    """Spread and best-k per condition (``frame`` with ``regret``)."""
    rows = []
    for condition, group in frame.groupby("condition", sort=False):
        values = group["value"].to_numpy(float)
        ranked = np.sort(values)[::-1] if higher_is_better else np.sort(values)  # best first
        q1, q3 = np.percentile(values, [25, 75])
        row = {
            "condition": condition,
            "n": len(values),
            "best": ranked[0],
            "mean": values.mean(),
            "sd": values.std(ddof=1) if len(values) > 1 else np.nan,
            "median": np.median(values),
            "iqr": q3 - q1,
            "range": np.ptp(values),
            "mean_regret": group["regret"].mean(),
        }
        for k in ks:
            row[f"best{k}_mean"] = ranked[:k].mean() if k <= len(ranked) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def main_effects(frame: pd.DataFrame, params: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per condition and parameter: how far the level means spread (few levels), or
    Spearman's rho of value against the parameter (continuous)."""
    effects, levels = [], []
    for condition, group in frame.groupby("condition", sort=False):
        for param in params:
            column = group[param]
            distinct = column.nunique(dropna=True)
            if distinct < 2:
                continue
            if distinct <= LEVELS_MAX:
                means = group.groupby(param)["value"].agg(["mean", "count"]).reset_index()
                for _, level in means.iterrows():
                    levels.append(
                        {
                            "condition": condition,
                            "param": param,
                            "level": level[param],
                            "mean": level["mean"],
                            "n": int(level["count"]),
                        }
                    )
                effects.append(
                    {
                        "condition": condition,
                        "param": param,
                        "kind": "range of level means",
                        "effect": means["mean"].max() - means["mean"].min(),
                        "p_value": np.nan,
                    }
                )
            else:
                x = pd.to_numeric(column, errors="coerce")
                rho, p = stats.spearmanr(x, group["value"])
                effects.append(
                    {
                        "condition": condition,
                        "param": param,
                        "kind": "Spearman rho",
                        "effect": float(rho),
                        "p_value": float(p),
                    }
                )
    return pd.DataFrame(effects), pd.DataFrame(levels)


def robustness_curve(frame: pd.DataFrame, points: int = 101) -> pd.DataFrame:
    """Fraction of each condition's configurations within δ of its best, δ from 0 to the
    largest regret of any condition."""
    top = float(frame["regret"].max()) or 1e-12
    deltas = np.linspace(0.0, top, points)
    rows = []
    for condition, group in frame.groupby("condition", sort=False):
        r = np.sort(group["regret"].to_numpy(float))
        fraction = np.searchsorted(r, deltas + 1e-12, side="right") / len(r)
        rows += [
            {"condition": condition, "delta": d, "fraction": f}
            for d, f in zip(deltas, fraction, strict=True)
        ]
    return pd.DataFrame(rows)


def compare_sensitivity(
    frame: pd.DataFrame,
    *,
    a: str,
    b: str,
    higher_is_better: bool,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> dict[str, object]:
    """Is ``a`` less sensitive than ``b``? Differences ``a - b`` of mean regret and IQR
    (negative: ``a`` is less sensitive), paired by configuration when possible.

    The CIs are percentile bootstraps over configurations (the same resampled
    configurations for both conditions when paired) that recompute each condition's best
    inside every resample, so the noise in the best is part of the interval. The tests
    (Wilcoxon signed-rank on per-configuration regret differences when paired,
    Mann-Whitney U on regrets otherwise) condition on the observed bests.
    """
    ga, gb = frame[frame.condition == a], frame[frame.condition == b]
    rng = np.random.default_rng(seed)
    paired = (
        ga["config"].is_unique
        and gb["config"].is_unique
        and set(ga["config"]) == set(gb["config"])
        and len(ga) >= 2
    )
    row: dict[str, object] = {
        "a": a,
        "b": b,
        "n_a": len(ga),
        "n_b": len(gb),
        "mean_regret_a": ga["regret"].mean(),
        "mean_regret_b": gb["regret"].mean(),
        "paired": paired,
    }
    if len(ga) < 2 or len(gb) < 2:
        return {
            **row,
            "delta_regret": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "test": "none (fewer than 2 trials)",
            "p_value": np.nan,
            "delta_iqr": np.nan,
            "iqr_ci_low": np.nan,
            "iqr_ci_high": np.nan,
            "spread_test_p": np.nan,
        }

    def mean_regret(values: np.ndarray) -> np.ndarray:  # over the last axis
        best = values.max(axis=-1) if higher_is_better else values.min(axis=-1)
        return np.abs(best - values.mean(axis=-1))

    if paired:
        joined = ga.set_index("config")[["regret", "value"]].join(
            gb.set_index("config")[["regret", "value"]], lsuffix="_a", rsuffix="_b"
        )
        va, vb = joined["value_a"].to_numpy(float), joined["value_b"].to_numpy(float)
        d = (joined["regret_a"] - joined["regret_b"]).to_numpy(float)
        p = 1.0 if np.allclose(d, 0) else float(stats.wilcoxon(d).pvalue)
        ia = ib = rng.integers(0, len(va), size=(n_resamples, len(va)))
        test = "Wilcoxon signed-rank (paired by configuration)"
    else:
        va, vb = ga["value"].to_numpy(float), gb["value"].to_numpy(float)
        ra, rb = ga["regret"].to_numpy(float), gb["regret"].to_numpy(float)
        p = float(stats.mannwhitneyu(ra, rb, alternative="two-sided").pvalue)
        ia = rng.integers(0, len(va), size=(n_resamples, len(va)))
        ib = rng.integers(0, len(vb), size=(n_resamples, len(vb)))
        test = "Mann-Whitney U (unpaired)"
    tail = (1 - confidence) / 2
    boot = mean_regret(va[ia]) - mean_regret(vb[ib])
    boot_iqr = _iqr(va[ia]) - _iqr(vb[ib])
    constant = np.ptp(va) == 0 and np.ptp(vb) == 0
    row.update(
        delta_regret=float(mean_regret(va) - mean_regret(vb)),
        ci_low=float(np.quantile(boot, tail)),
        ci_high=float(np.quantile(boot, 1 - tail)),
        test=test,
        p_value=p,
        delta_iqr=float(_iqr(va) - _iqr(vb)),
        iqr_ci_low=float(np.quantile(boot_iqr, tail)),
        iqr_ci_high=float(np.quantile(boot_iqr, 1 - tail)),
        # Brown-Forsythe: Levene's test around the median.
        spread_test_p=1.0 if constant else float(stats.levene(va, vb, center="median").pvalue),
    )
    return row


def sensitivity(
    frame: pd.DataFrame,
    *,
    params: Sequence[str],
    higher_is_better: bool,
    reference: str | None = None,
    confidence: float = 0.95,
    correction: str = "holm",
    seed: int = 0,
) -> Sensitivity:
    """Everything above for every condition; each other condition is compared with
    ``reference`` (default ``scratch`` if present, else the first), p-values corrected
    together (Holm by default)."""
    if frame.empty:
        raise ValueError("no completed trials to analyse")
    data = regrets(frame, higher_is_better=higher_is_better)
    conditions = list(dict.fromkeys(data["condition"]))
    ref = reference or ("scratch" if "scratch" in conditions else conditions[0])
    rows = [
        compare_sensitivity(
            data, a=c, b=ref, higher_is_better=higher_is_better, confidence=confidence, seed=seed
        )
        for c in conditions
        if c != ref
    ]
    comparisons = pd.DataFrame(rows)
    if len(comparisons):
        p = comparisons["p_value"].to_numpy(float)
        adjusted = np.full_like(p, np.nan)
        ok = np.isfinite(p)
        if ok.any():
            adjusted[ok] = adjust_pvalues(p[ok], correction)  # type: ignore[arg-type]
        comparisons["p_adjusted"] = adjusted
    effects, levels = main_effects(data, params)
    return Sensitivity(
        summary=condition_summary(data, higher_is_better=higher_is_better),
        effects=effects,
        levels=levels,
        comparisons=comparisons,
        robustness=robustness_curve(data),
        regrets=data,
        params=list(params),
        higher_is_better=higher_is_better,
    )


def verdict(row: pd.Series | dict, alpha: float = 0.05) -> str:
    """One sentence: is ``a`` less (or more) sensitive than ``b``?"""
    a, b = row["a"], row["b"]
    if not np.isfinite(row["ci_low"]):
        return f"{a} vs {b}: too few trials to compare sensitivity."
    p = row.get("p_adjusted", row["p_value"])
    if row["ci_high"] < 0 and p < alpha:
        word = "less sensitive"
    elif row["ci_low"] > 0 and p < alpha:
        word = "more sensitive"
    else:
        return (
            f"{a} vs {b}: no clear difference in sensitivity (mean regret "
            f"{row['mean_regret_a']:.4g} vs {row['mean_regret_b']:.4g})."
        )
    return (
        f"{a} is {word} to its hyperparameters than {b}: mean regret "
        f"{row['mean_regret_a']:.4g} vs {row['mean_regret_b']:.4g} "
        f"(Δ {row['delta_regret']:+.4g}, CI [{row['ci_low']:+.4g}, {row['ci_high']:+.4g}], p={p:.3g})."
    )


def _iqr(x: np.ndarray) -> np.ndarray:
    q1, q3 = np.percentile(x, [25, 75], axis=-1)
    return q3 - q1
