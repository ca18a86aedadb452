"""How many seeds a decision needs, and the smallest effect the seeds at hand can decide:
the power side of every comparison row."""

from __future__ import annotations

import math
import warnings

from scipy import optimize, stats

from analysis.stats.estimates import Estimate

SEEDS_CAP = 10_000  # "need ≈N seeds" above this is reported as "> 10000"

SEEDS_CONFIDENCE = 0.8  # the interval around "need ≈N seeds"


def needed_seeds(
    est: Estimate, rope: float, alpha: float, power: float, *, paired: bool
) -> dict[str, float]:
    """Seeds a decision needs at the observed effect, and at the ends of an 80% interval
    for the standardised effect (noncentral t; normal for Hedges' g): at n = 5 the
    observed d_z alone is far too noisy to plan with (8 to 64 seeds for a true d = 1)."""
    point = seeds_needed(est.delta, est.sd_for_power, rope, alpha, power, paired=paired)
    if est.sd_for_power == 0 or not math.isfinite(est.effect):
        return {"seeds_needed": point, "seeds_needed_low": point, "seeds_needed_high": point}
    sign = 1.0 if est.delta >= 0 else -1.0
    strong, weak = effect_bounds(est, paired=paired)  # |effect| bounds, strongest first
    low = seeds_needed(
        sign * strong * est.sd_for_power, est.sd_for_power, rope, alpha, power, paired=paired
    )
    high = (
        seeds_needed(
            sign * weak * est.sd_for_power, est.sd_for_power, rope, alpha, power, paired=paired
        )
        if weak * est.sd_for_power > rope or abs(est.delta) <= rope
        else math.inf
    )
    if abs(est.delta) <= rope:  # equivalence: a smaller |Δ| is the easier case
        low, high = min(low, high, point), max(low, high, point)
    return {
        "seeds_needed": point,
        "seeds_needed_low": min(low, point),
        "seeds_needed_high": max(high, point),
    }


def effect_bounds(est: Estimate, *, paired: bool) -> tuple[float, float]:
    """(upper, lower) 80% confidence bounds of |standardised effect| in the observed
    direction; the lower bound is clipped at 0."""
    tail = (1 - SEEDS_CONFIDENCE) / 2
    size = abs(est.effect)
    if paired:
        n = est.n
        t_obs = size * math.sqrt(n)

        width = 8.0 * math.sqrt(1.0 + t_obs**2 / (2 * (n - 1))) + 1.0

        def bound(q: float) -> float:
            def f(ncp: float) -> float:
                return float(stats.nct.cdf(t_obs, n - 1, ncp)) - q

            lo, hi = max(-50.0, t_obs - width), t_obs + width
            try:
                return optimize.brentq(f, lo, hi) / math.sqrt(n)
            except ValueError:  # scipy's noncentral t gives NaN far in its tails
                return math.nan

        upper, lower = bound(tail), bound(1 - tail)
        upper = size if math.isnan(upper) else upper
        lower = 0.0 if math.isnan(lower) else lower
    else:
        se = math.sqrt(2 / est.n + size**2 / (4 * est.n))
        z = stats.norm.isf(tail)
        upper, lower = size + z * se, size - z * se
    return float(upper), float(max(0.0, lower))


def minimum_detectable_effect(
    n: int, sd: float, critical: float, rope: float, power: float, *, paired: bool
) -> float:
    """Smallest |Δ| whose interval clears the ROPE with ``power`` at n seeds per arm, for
    the row's own critical value (the verdict's test). Always finite for n ≥ 2."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return rope
    df = n - 1 if paired else 2 * n - 2
    scale = sd / math.sqrt(n) if paired else sd * math.sqrt(2 / n)
    if not math.isfinite(critical):
        return math.inf

    def short(x: float) -> float:
        return float(stats.nct.sf(critical, df, x)) - power

    high = critical + 10.0
    while not short(high) > 0:  # at 1-2 degrees of freedom the power rises slowly
        high *= 2
        if high > 1e6:
            return math.inf
    return float(rope + optimize.brentq(short, 0.0, high) * scale)


def seeds_needed(
    delta: float, sd: float, rope: float, alpha: float, power: float, *, paired: bool
) -> float:
    """Seeds per arm at which a fixed design's interval at level 1 − ``alpha`` decides the
    row with ``power``, if the truth is ``delta`` with spread ``sd``: clearing the ROPE
    when |delta| > ROPE, lying inside it otherwise. The smallest such n ≥ 2."""
    if not (math.isfinite(delta) and math.isfinite(sd)):
        return math.nan
    size = abs(float(delta))
    if sd == 0:
        return 2.0 if size != rope else math.inf
    if size == rope:
        return math.inf

    def achieved(n: int) -> float:
        df = n - 1 if paired else 2 * n - 2
        scale = sd / math.sqrt(n) if paired else sd * math.sqrt(2 / n)
        c = stats.t.isf(alpha / 2, df)
        if size > rope:
            return float(stats.nct.sf(c, df, (size - rope) / scale))
        # inside ±ROPE: the mean's interval must fit between the bounds (normal approximation)
        return float(
            max(
                0.0,
                stats.norm.cdf((rope - size) / scale - c)
                - stats.norm.cdf((-rope - size) / scale + c),
            )
        )

    def enough(n: int) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return achieved(n) >= power

    low = 2
    if enough(low):
        return float(low)
    high = 4
    while not enough(high):
        if high > SEEDS_CAP:
            return math.inf
        low, high = high, high * 2
    while high - low > 1:  # power grows with n
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(high)


def seeds_text(value: float, n: int) -> str:
    if not math.isfinite(value):
        return "∞" if value > 0 or math.isnan(value) else "?"
    return f"> {SEEDS_CAP}" if value > SEEDS_CAP else str(max(int(value), n + 1))
