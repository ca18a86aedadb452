"""One row's estimate of Δ = A − B (paired on seeds, or Welch), its probability of
superiority with an honest interval, and the Bayesian posterior over better/equivalent/worse."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass
class Estimate:
    n: int  # pairs, or the smaller arm (the look's seed count)
    delta: float
    se: float
    df: float
    sd: float  # of the differences (paired) or pooled (Welch)
    effect: float
    r: float
    ps: float
    ps_low: float
    ps_high: float
    sd_for_power: float
    welch_df: float = math.nan


def paired_estimate(xa: np.ndarray, xb: np.ndarray) -> Estimate:
    d = xa - xb
    n = len(d)
    delta, sd = float(d.mean()), float(d.std(ddof=1))
    if is_constant(d):  # every pair differs by the same amount: no spread, no t statistic
        sd = 0.0
    effect = delta / sd if sd > 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
    wins = float((d > 0).sum() + 0.5 * (d == 0).sum())
    ps_low, ps_high = wilson_interval(wins, n)
    return Estimate(
        n,
        delta,
        sd / math.sqrt(n),
        n - 1,
        sd,
        effect,
        correlation(xa, xb),
        wins / n,
        ps_low,
        ps_high,
        sd,
    )


def welch_estimate(xa: np.ndarray, xb: np.ndarray) -> Estimate:
    na, nb = len(xa), len(xb)
    delta = float(xa.mean() - xb.mean())
    va, vb = float(xa.var(ddof=1)), float(xb.var(ddof=1))
    se = math.sqrt(va / na + vb / nb)
    if se > 0 and (va > 0 or vb > 0):
        df = (va / na + vb / nb) ** 2 / (
            (va / na) ** 2 / max(na - 1, 1) + (vb / nb) ** 2 / max(nb - 1, 1)
        )
    else:
        df, se = float(na + nb - 2), 0.0
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    j = 1.0 - 3.0 / (4.0 * (na + nb) - 9.0)  # Hedges' small-sample correction
    effect = (
        delta / pooled * j
        if pooled > 0
        else (0.0 if delta == 0 else math.copysign(math.inf, delta))
    )
    ps = float(((xa[:, None] > xb[None, :]) + 0.5 * (xa[:, None] == xb[None, :])).mean())
    ps_low, ps_high = newcombe_auc_interval(ps, na, nb)
    # Power figures for Welch: per-arm n with the arms' average variance.
    return Estimate(
        min(na, nb),
        delta,
        se,
        df,
        pooled,
        effect,
        math.nan,
        ps,
        ps_low,
        ps_high,
        math.sqrt((va + vb) / 2),
        df,
    )


def posterior(est: Estimate, rope: float, higher_better: bool, a: str, b: str) -> dict[str, float]:
    """P(a better), P(equivalent within ±ROPE), P(b better) under the Student-t posterior
    of the mean difference (flat prior on the mean, Jeffreys on the scale): the Bayesian
    correlated t-test of Benavoli et al. (2017) with correlation 0, as seeds are
    independent replicates (Welch rows: the Welch–Satterthwaite approximation)."""
    if est.se == 0:
        above, below = float(est.delta > rope), float(est.delta < -rope)
    else:
        dist = stats.t(est.df, loc=est.delta, scale=est.se)
        above, below = float(dist.sf(rope)), float(dist.cdf(-rope))
    inside = max(0.0, 1.0 - above - below)
    a_better, b_better = (above, below) if higher_better else (below, above)
    return {"prob_a_better": a_better, "prob_equivalent": inside, "prob_b_better": b_better}


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


def sample_sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) >= 2 else math.nan


def is_constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())))


def correlation(xa: np.ndarray, xb: np.ndarray) -> float:
    if is_constant(xa) or is_constant(xb):
        return float("nan")
    return float(np.corrcoef(xa, xb)[0, 1])
