"""Condition A vs condition B per group: estimate first, test second.

Every row carries Δ = A − B with a CI, a standardised effect size, P(A > B) with a CI, the
exact permutation p-value with its floor at this n, the family-adjusted p-value, the
minimum detectable effect, the seeds needed for 80% power and a plain-language verdict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.stats.power import TTestIndPower, TTestPower, normal_power

from analysis.errors import AnalysisInputError
from analysis.stats.multiplicity import Correction, adjust_pvalues, family_alpha

# Exact permutation tests enumerate up to this many sign flips / relabellings; above it a
# seeded Monte Carlo test with MONTE_CARLO_RESAMPLES draws is used instead.
MAX_EXACT = 2**17
MONTE_CARLO_RESAMPLES = 9_999
SEEDS_CAP = 10_000  # "need ≈N seeds" above this is reported as "> 10000"
# Metric names whose smaller values are better; everything else is higher-is-better.
LOWER_IS_BETTER_SUFFIXES = ("loss", "mae", "error", "_s", "seconds")

COMPARE_COLUMNS = [
    "a", "b", "design", "test", "n_a", "n_b", "n_pairs", "n_unmatched", "n_averaged",
    "mean_a", "sd_a", "mean_b", "sd_b", "r_arms", "delta", "ci_low", "ci_high",
    "effect_size", "effect_kind", "p_superiority", "ps_low", "ps_high",
    "p_value", "p_t", "p_adjusted", "correction", "p_floor", "mde", "seeds_needed",
    "verdict", "run_ids_a", "run_ids_b",
]  # fmt: skip


def higher_is_better(metric: str) -> bool:
    return not str(metric).lower().endswith(LOWER_IS_BETTER_SUFFIXES)


def compare_two(
    frame: pd.DataFrame,
    *,
    a: str,
    b: str,
    arm: str = "condition",
    value: str = "value",
    pair_on: str | None = "seed",
    by: Sequence[str] = ("pattern", "metric"),
    alpha: float = 0.05,
    confidence: float = 0.95,
    correction: Correction = "holm",
    rope: float = 0.01,
    power: float = 0.8,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare arm ``a`` with arm ``b`` in every group of ``by``; all rows form one family.

    Runs that share a ``pair_on`` value (the seed) are pairs. A group is analysed as
    paired when at least two pairs exist and matched runs outnumber unmatched ones
    (repeats of an (arm, seed) are averaged, unmatched runs dropped and counted);
    otherwise as two independent samples (Welch). The paired design reports d_z and the
    exact sign-flip test; the independent one Hedges' g and the exact relabelling test.
    ``p_value`` is that exact test; ``p_t`` the matching t-test, for reference.
    ``p_adjusted`` corrects ``p_value`` over the family (every row of this call).

    Power figures are quoted at α/m, m the family size (Holm's strictest step):
    ``mde`` is the smallest |Δ| detectable with ``power`` at this n (∞ when even a
    perfect result cannot beat the exact test's floor), ``seeds_needed`` the n per arm
    that detects the observed effect (an effect one ``rope`` wide when none is observed)
    and lets the exact test reach α/m.

    Raises:
        AnalysisInputError: an arm is absent from the whole frame (the row-level case, an
            arm missing from one group only, is reported in that row's verdict).
    """
    frame = frame.dropna(subset=[value])  # e.g. no epoch finished within a compute budget
    for name in (a, b):
        if not (frame[arm] == name).any():
            present = ", ".join(sorted(map(str, frame[arm].dropna().unique()))) or "none"
            raise AnalysisInputError(
                f"no runs with {arm}={name!r} to compare; {arm} values present: {present}"
            )
    groups = list(frame.groupby(list(by), sort=True, dropna=False)) if by else [((), frame)]
    rows = []
    for key, group in groups:
        keys = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        row = _compare_group(group, a=a, b=b, arm=arm, value=value, pair_on=pair_on,
                             confidence=confidence, seed=seed)  # fmt: skip
        rows.append({**keys, **row})
    result = pd.DataFrame(rows, columns=[*by, *COMPARE_COLUMNS, "_sd", "_n"])
    result["p_adjusted"] = adjust_pvalues(result["p_value"].to_numpy(), correction)
    result["correction"] = correction
    m = int(np.isfinite(result["p_value"].to_numpy(dtype=float)).sum())
    alpha_m = family_alpha(alpha, m)
    mde, need, verdicts = [], [], []
    for r in result.to_dict("records"):
        if r["design"] not in ("paired", "welch"):
            mde.append(float("nan"))
            need.append(float("nan"))
            verdicts.append(r["verdict"])
            continue
        paired = r["design"] == "paired"
        # int(): `_n` turns float in a table where another row has no n (NaN).
        mde.append(minimum_detectable_effect(int(r["_n"]), r["_sd"], alpha_m, power, paired=paired))
        need.append(seeds_needed(r["effect_size"], r["_sd"], rope, alpha_m, power, paired=paired))
        r["seeds_needed"] = need[-1]
        better = higher_is_better(r.get("metric", ""))
        verdicts.append(verdict(r, alpha=alpha, rope=rope, higher_better=better))
    result["mde"], result["seeds_needed"], result["verdict"] = mde, need, verdicts
    return result.drop(columns=["_sd", "_n"])


def _compare_group(
    group: pd.DataFrame, *, a: str, b: str, arm: str, value: str, pair_on: str | None,
    confidence: float, seed: int,
) -> dict[str, object]:  # fmt: skip
    ga, gb = group[group[arm] == a], group[group[arm] == b]
    ids = {
        "run_ids_a": ";".join(map(str, ga["run_id"])) if "run_id" in group else "",
        "run_ids_b": ";".join(map(str, gb["run_id"])) if "run_id" in group else "",
    }
    base = {"a": a, "b": b, "n_a": len(ga), "n_b": len(gb), "n_pairs": 0, "n_unmatched": 0,
            "n_averaged": 0, **ids}  # fmt: skip
    if ga.empty or gb.empty:
        missing = a if ga.empty else b
        return {**base, "design": "missing arm", "verdict": f"no {missing} runs in this group"}
    if pair_on is not None and pair_on in group and group[pair_on].notna().all():
        ab = group[group[arm].isin([a, b])]
        wide = ab.pivot_table(index=pair_on, columns=arm, values=value, aggfunc="mean")
        wide = wide.reindex(columns=[a, b]).dropna()  # (n_pairs, 2)
        matched = ab[pair_on].isin(wide.index)
        averaged = int(matched.sum() - 2 * len(wide))
        if len(wide) >= 2 and matched.sum() >= (~matched).sum():
            stats_row = paired_statistics(wide[a].to_numpy(), wide[b].to_numpy(), confidence)
            return {**base, **stats_row, "n_pairs": len(wide), "n_unmatched": int((~matched).sum()),
                    "n_averaged": averaged}  # fmt: skip
    xa, xb = ga[value].to_numpy(dtype=float), gb[value].to_numpy(dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        n = min(len(xa), len(xb))
        return {**base, "design": "too few runs", "mean_a": float(xa.mean()),
                "mean_b": float(xb.mean()), "delta": float(xa.mean() - xb.mean()), "p_floor": 1.0,
                "verdict": f"inconclusive at n={n}; at least 2 runs (or 2 seed pairs) per arm "
                           "are needed for a CI or a test"}  # fmt: skip
    return {**base, **welch_statistics(xa, xb, confidence, seed)}


def paired_statistics(xa: np.ndarray, xb: np.ndarray, confidence: float) -> dict[str, object]:
    """Paired estimates and tests for matched vectors ``xa``, ``xb`` (n ≥ 2)."""
    d = xa - xb
    n = len(d)
    delta, sd = float(d.mean()), float(d.std(ddof=1))
    degenerate = _constant(d)
    if degenerate:  # every pair differs by the same amount: no spread, no t statistic
        low = high = delta
        p_t = float("nan")
        effect = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        sd = 0.0
    else:
        low, high = stats.t.interval(confidence, n - 1, loc=delta, scale=stats.sem(d))
        p_t = float(stats.ttest_rel(xa, xb).pvalue)
        effect = delta / sd
    wins = float((d > 0).sum() + 0.5 * (d == 0).sum())
    ps_low, ps_high = wilson_interval(wins, n, confidence)
    return {
        "design": "paired", "test": "exact sign-flip" if 2**n <= MAX_EXACT else "sign-flip (Monte Carlo)",
        "mean_a": float(xa.mean()), "sd_a": float(xa.std(ddof=1)),
        "mean_b": float(xb.mean()), "sd_b": float(xb.std(ddof=1)),
        "r_arms": _correlation(xa, xb), "delta": delta, "ci_low": float(low), "ci_high": float(high),
        "effect_size": effect, "effect_kind": "d_z",
        "p_superiority": wins / n, "ps_low": ps_low, "ps_high": ps_high,
        "p_value": sign_flip_p(d), "p_t": p_t, "p_floor": min(1.0, 2.0 / 2**n),
        "_sd": sd, "_n": n,
    }  # fmt: skip


def welch_statistics(
    xa: np.ndarray, xb: np.ndarray, confidence: float, seed: int = 0
) -> dict[str, object]:
    """Independent-samples estimates and tests (each arm ≥ 2 runs)."""
    na, nb = len(xa), len(xb)
    delta = float(xa.mean() - xb.mean())
    sa, sb = float(xa.std(ddof=1)), float(xb.std(ddof=1))
    pooled = math.sqrt(((na - 1) * sa**2 + (nb - 1) * sb**2) / (na + nb - 2))
    if pooled == 0.0:
        low = high = delta
        p_t = float("nan")
        effect = 0.0 if delta == 0 else math.copysign(math.inf, delta)
    else:
        test = stats.ttest_ind(xa, xb, equal_var=False)
        low, high = test.confidence_interval(confidence)
        p_t = float(test.pvalue)
        correction = 1.0 - 3.0 / (4.0 * (na + nb) - 9.0)  # Hedges' small-sample J
        effect = delta / pooled * correction
    ps = float(((xa[:, None] > xb[None, :]) + 0.5 * (xa[:, None] == xb[None, :])).mean())
    ps_low, ps_high = newcombe_auc_interval(ps, na, nb, confidence)
    total = math.comb(na + nb, na)
    return {
        "design": "welch", "test": "exact permutation" if total <= MAX_EXACT else "permutation (Monte Carlo)",
        "mean_a": float(xa.mean()), "sd_a": sa, "mean_b": float(xb.mean()), "sd_b": sb,
        "r_arms": float("nan"), "delta": delta, "ci_low": float(low), "ci_high": float(high),
        "effect_size": effect, "effect_kind": "hedges_g",
        "p_superiority": ps, "ps_low": ps_low, "ps_high": ps_high,
        "p_value": permutation_p(xa, xb, seed), "p_t": p_t, "p_floor": min(1.0, 2.0 / total),
        "_sd": pooled, "_n": min(na, nb),
    }  # fmt: skip


def sign_flip_p(d: np.ndarray, seed: int = 0) -> float:
    """Two-sided sign-flip test of mean(d) = 0; exact up to :data:`MAX_EXACT` flips."""
    exact = 2 ** len(d)
    result = stats.permutation_test(
        (d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
        vectorized=True, n_resamples=exact if exact <= MAX_EXACT else MONTE_CARLO_RESAMPLES,
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(min(1.0, result.pvalue))


def permutation_p(xa: np.ndarray, xb: np.ndarray, seed: int = 0) -> float:
    """Two-sided relabelling test of equal means; exact up to :data:`MAX_EXACT` splits."""
    exact = math.comb(len(xa) + len(xb), len(xa))
    result = stats.permutation_test(
        (xa, xb), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        permutation_type="independent", vectorized=True,
        n_resamples=exact if exact <= MAX_EXACT else MONTE_CARLO_RESAMPLES,
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(min(1.0, result.pvalue))


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; honest at 0/n and n/n, unlike a bootstrap."""
    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_auc_interval(
    theta: float, m: int, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's (2006) score interval, method 5, for P(A > B) from two samples.

    It inverts the Hanley–McNeil variance with N* = (m + n)/2, so a perfect separation
    (θ = 1) still gets a lower bound below 1.
    """
    z = stats.norm.ppf(0.5 + confidence / 2)
    n_star = (m + n) / 2

    def gap(t: float) -> float:
        var = t * (1 - t) / (m * n) * (1 + (n_star - 1) * ((1 - t) / (2 - t) + t / (1 + t)))
        return (theta - t) ** 2 - z**2 * var

    eps = 1e-12
    low = 0.0 if theta <= eps else optimize.brentq(gap, 0.0, min(theta, 1 - 1e-9))
    high = 1.0 if theta >= 1 - eps else optimize.brentq(gap, max(theta, 1e-9), 1.0)
    return float(low), float(high)


def minimum_detectable_effect(
    n: int, sd: float, alpha: float, power: float, *, paired: bool
) -> float:
    """Smallest |Δ| (metric units) detected with ``power`` at level ``alpha`` with n per arm.

    ∞ when the exact test's floor at this n is above ``alpha``: no result could pass.
    """
    floor = 2.0 / 2**n if paired else 2.0 / math.comb(2 * n, n)
    if floor > alpha:
        return math.inf
    if sd == 0:
        return 0.0
    try:
        with warnings.catch_warnings():  # non-convergence returns NaN, which we report
            warnings.simplefilter("ignore")
            if paired:
                d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)
            else:
                d = TTestIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power)
    except (ValueError, RuntimeError):
        return float("nan")
    return float(d) * sd


def seeds_needed(
    effect: float, sd: float, rope: float, alpha: float, power: float, *, paired: bool
) -> float:
    """Seeds (per arm) for ``power`` at level ``alpha``, and enough for the exact test."""
    floor_n = exact_test_min_n(alpha, paired=paired)
    size = abs(float(effect))
    if not math.isfinite(size):  # no spread: any n that clears the exact floor suffices
        return float(floor_n)
    if size == 0:
        size = rope / sd if sd > 0 and rope > 0 else 0.0
    if size == 0:
        return math.inf
    analysis = TTestPower() if paired else TTestIndPower()

    def enough(n: int) -> bool:  # power grows with n, so the smallest such n is found by bisection
        achieved = analysis.power(size, n, alpha)
        if not np.isfinite(achieved):  # statsmodels' noncentral t gives NaN when power ≈ 1
            achieved = normal_power(size, n if paired else n / 2, alpha)
        return bool(achieved >= power)

    low = max(floor_n, 2)
    if enough(low):
        return float(low)
    high = low * 2
    while not enough(high):
        if high > SEEDS_CAP:
            return math.inf
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(high)


def exact_test_min_n(alpha: float, *, paired: bool) -> int:
    """The fewest seeds (per arm) at which the exact two-sided test can reach ``alpha``."""
    n = 1
    while (2.0 / 2**n if paired else 2.0 / math.comb(2 * n, n)) > alpha:
        n += 1
    return n


def verdict(row: dict[str, object], *, alpha: float, rope: float, higher_better: bool) -> str:
    """ "better", "worse", "equivalent within ±ROPE" or "inconclusive at n=…; need ≈N seeds"."""
    low, high, p_adj = row["ci_low"], row["ci_high"], row["p_adjusted"]
    n = int(row["_n"])
    excludes_zero = low > 0 or high < 0
    if pd.notna(p_adj) and p_adj < alpha and excludes_zero:
        return "better" if (row["delta"] > 0) == higher_better else "worse"
    if rope > 0 and pd.notna(low) and -rope <= low and high <= rope:
        return f"equivalent within ±{rope:g}"
    need = row["seeds_needed"]
    need_text = f"> {SEEDS_CAP}" if not math.isfinite(need) else f"≈{max(int(need), n + 1)}"
    return f"inconclusive at n={n}; need {need_text} seeds"


def _constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())))


def _correlation(xa: np.ndarray, xb: np.ndarray) -> float:
    if _constant(xa) or _constant(xb):
        return float("nan")
    return float(np.corrcoef(xa, xb)[0, 1])
