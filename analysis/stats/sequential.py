"""Group-sequential confidence intervals for the mean of paired differences.

A *design* fixes, before any run, the looks at which seeds are counted: ``min``, then every
``step`` more seeds, up to ``max``. At look k the analysis forms a *repeated confidence
interval* (Jennison & Turnbull 1989; *Group Sequential Methods*, 2000, ch. 9)

    Δ̂_k ± c_k · s_k / √n_k

whose critical values c_1, …, c_K are chosen so that, when the true mean difference is
Δ, P(some look's interval misses Δ) = α_row. The error a look may spend is set by a
Lan–DeMets spending function of the information fraction n_k / max, so unplanned looks
(a seed that failed) are still valid. Every decision (a direction, or equivalence within
±ROPE) is read off these intervals, so any stopping rule keeps the error rate: stopping
when a row is decided, when it looks hopeless, or never.

Why Monte Carlo: with unknown variance the statistics are t, not z, and the textbook
"significance-level" conversion of z boundaries to t (J&T §11.5) is anti-conservative at
the 4–10 degrees of freedom researchers have (6 rows × 6 looks: FWER 0.063 instead of
0.05 in our simulations). Under normal differences the joint law of t_1, …, t_K does not
depend on the mean or the variance, only on the look sizes, so the critical values are
computed exactly up to Monte Carlo error from :data:`NULL_PATHS` simulated null paths
with a fixed seed (deterministic, cached, well under a second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import optimize, stats

from analysis.errors import AnalysisInputError

Spending = Literal["pocock", "obrien_fleming", "linear"]
SPENDING: tuple[str, ...] = ("pocock", "obrien_fleming", "linear")
NULL_PATHS = 2**18  # simulated null paths per look schedule: ±2.5% on a row's error
NULL_SEED = 20261203  # fixed: the same design always gets the same critical values


def spent(spending: Spending, fraction: np.ndarray | float, alpha: float) -> np.ndarray:
    """Cumulative error allowed by information ``fraction`` (Lan & DeMets 1983).

    ``pocock`` spends early (α·ln(1 + (e − 1)t)): large effects stop at the first looks.
    ``obrien_fleming`` keeps almost all for the end (2 − 2Φ(z_{α/2}/√t)). ``linear``: αt.
    """
    t = np.clip(np.asarray(fraction, dtype=float), 0.0, 1.0)
    if spending == "pocock":
        return alpha * np.log1p((math.e - 1.0) * t)
    if spending == "obrien_fleming":
        with np.errstate(divide="ignore"):
            return np.where(t > 0, 2.0 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(t)), 0.0)
    if spending == "linear":
        return alpha * t
    raise AnalysisInputError(
        f"spending={spending!r} is unknown; choose one of {', '.join(SPENDING)}"
    )


@dataclass(frozen=True)
class SequentialDesign:
    """The looks of an adaptive-seed study and how each spends its error.

    Args:
        min: seeds per arm at the first look (5: the fewest at which a t interval at the
            per-row levels of a 6-row family can exclude 0 for the effects pretraining
            has on avdigits; at 3–4 seeds the critical t is above 10).
        step: seeds added to every undecided cell between looks.
        max: seeds per arm at the last look; the information fraction is n / max.
        spending: the Lan–DeMets spending function (``pocock``, ``obrien_fleming``,
            ``linear``).
        futility: stop adding seeds to a cell when the plug-in probability that its
            undecided headline rows are decided by ``max`` seeds is below this (0: never).
            Non-binding: it cannot raise an error rate, it only saves compute.
        stop: ``stratum`` (each grid stratum stops on its own) or ``all`` (every stratum
            keeps adding seeds until all are decided, so all end with the same n).
    """

    min: int = 5
    step: int = 1
    max: int = 20
    spending: Spending = "pocock"
    futility: float = 0.05
    stop: Literal["stratum", "all"] = "stratum"
    looks: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("min", "step", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise AnalysisInputError(
                    f"seeds.{name}={value!r} must be an integer; e.g. seeds.{name}={_DEFAULTS[name]}"
                )
        if self.min < 2:
            raise AnalysisInputError(
                f"seeds.min={self.min}: a confidence interval needs at least 2 seeds; use seeds.min=5"
            )
        if self.step <= 0:
            raise AnalysisInputError(
                f"seeds.step={self.step} must be a positive number of seeds added per look; "
                "e.g. seeds.step=1"
            )
        if self.min > self.max:
            raise AnalysisInputError(
                f"seeds.min={self.min} is above seeds.max={self.max}; raise seeds.max or lower "
                "seeds.min"
            )
        if self.spending not in SPENDING:
            raise AnalysisInputError(
                f"seeds.spending={self.spending!r} is unknown; choose one of {', '.join(SPENDING)}"
            )
        if not 0.0 <= float(self.futility) < 1.0:
            raise AnalysisInputError(
                f"seeds.futility={self.futility} must lie in [0, 1); 0 turns futility stops off"
            )
        if self.stop not in ("stratum", "all"):
            raise AnalysisInputError(f"seeds.stop={self.stop!r}: choose stratum or all")
        planned = list(range(self.min, self.max + 1, self.step))
        if planned[-1] != self.max:
            planned.append(self.max)
        object.__setattr__(self, "looks", tuple(planned))

    def looks_until(self, n: int) -> tuple[int, ...]:
        """The looks a cell with ``n`` seeds has been through: the planned ones below n,
        then n itself (a seed that failed makes an unplanned look; spending covers it)."""
        return (*(k for k in self.looks if k < n), n)

    def describe(self) -> str:
        looks = self.looks
        shown = (
            ", ".join(map(str, looks))
            if len(looks) <= 6
            else f"{looks[0]}, {looks[1]}, …, {looks[-1]}"
        )
        return (
            f"group-sequential, {self.spending.replace('_', '-')} spending, looks at {shown} seeds"
        )


_DEFAULTS = {"min": 5, "step": 1, "max": 20}
# What an interval says about Δ = a − b, against ±ROPE.
UP, DOWN, INSIDE, UNDECIDED = 1, -1, 2, 0


def interval_decision(low, high, rope: float):  # noqa: ANN001, ANN201 - floats or arrays
    """UP (the interval lies above +ROPE), DOWN (below −ROPE), INSIDE (within ±ROPE; never
    with ROPE 0) or UNDECIDED, elementwise. The one decision rule of every verdict."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    out = np.where(low > rope, UP, np.where(high < -rope, DOWN, UNDECIDED))
    inside = (rope > 0) & (low > -rope) & (high < rope)
    out = np.where(inside, INSIDE, out)
    return out.item() if out.ndim == 0 else out


FIXED = None  # a fixed design is `design=None`: one look at the n there is


@lru_cache(maxsize=64)
def _null_t(looks: tuple[int, ...]) -> np.ndarray:
    """|t| of the one-sample t statistic at each look, for NULL_PATHS normal null paths.

    Seed j of every path is drawn from its own stream, so a schedule's paths are the
    same whatever looks come after: an interim look and a later re-analysis of the same
    look get the same critical value. (paths, K) float32."""
    out = np.empty((NULL_PATHS, len(looks)), dtype=np.float32)
    s = np.zeros(NULL_PATHS)
    q = np.zeros(NULL_PATHS)
    wanted = {n: k for k, n in enumerate(looks)}
    for j in range(1, looks[-1] + 1):
        x = np.random.default_rng([NULL_SEED, j]).standard_normal(NULL_PATHS)
        s += x
        q += x * x
        if j in wanted:
            mean = s / j
            var = np.maximum(q - j * mean**2, 1e-300) / (j - 1) if j > 1 else np.ones_like(s)
            out[:, wanted[j]] = np.abs(mean) / np.sqrt(var / j)
    return out


@lru_cache(maxsize=4096)
def critical_values(
    looks: tuple[int, ...], alpha: float, spending: Spending, n_max: int
) -> tuple[float, ...]:
    """t critical values c_1..c_K for two-sided repeated CIs at level 1 − ``alpha``.

    The fraction at look k is looks[k] / n_max (capped at 1). A single look is the
    ordinary t interval, exactly.
    """
    if len(looks) == 1 and looks[0] >= n_max:
        return (float(stats.t.isf(alpha / 2, looks[0] - 1)),)
    fractions = np.minimum(np.asarray(looks, dtype=float) / n_max, 1.0)
    increments = np.diff(np.concatenate([[0.0], spent(spending, fractions, alpha)]))
    if len(looks) == 1:  # one look short of the plan: the error spent so far
        return (float(stats.t.isf(max(increments[0], 1e-300) / 2, looks[0] - 1)),)
    null = _null_t(looks)
    alive = np.ones(len(null), dtype=bool)
    crits = []
    for k, allowed in enumerate(increments):
        column = null[alive, k]
        crossing = int(round(allowed * len(null)))  # paths allowed to cross at look k
        if k == 0:  # nothing came before: the t quantile itself, no Monte Carlo error
            c = float(stats.t.isf(allowed / 2, looks[0] - 1)) if allowed > 0 else math.inf
        elif crossing <= 0:
            c = math.inf
        elif crossing >= len(column):
            c = 0.0
        else:
            c = float(np.partition(column, len(column) - crossing)[len(column) - crossing])
        crits.append(c)
        alive &= null[:, k] < c
    return tuple(crits)


def nominal_level(c: float, n: int) -> float:
    """The two-sided fixed-sample p a critical value c corresponds to at n seeds."""
    return float(2 * stats.t.sf(c, n - 1)) if math.isfinite(c) else 0.0


def repeated_p_value(
    t_abs: float, looks: tuple[int, ...], spending: Spending, n_max: int, alpha: float
) -> float:
    """The repeated p-value at the last of ``looks``: the smallest level at which that
    look's repeated CI excludes 0 (Jennison & Turnbull 2000, §9.1).

    Interpolated in log-level between critical values tabulated once per schedule; the
    row's own level ``alpha`` is a node of the table, so p < alpha exactly when the
    interval at level 1 − alpha excludes 0.
    """
    if not math.isfinite(t_abs):
        return 0.0 if t_abs > 0 else 1.0
    if len(looks) == 1:  # one look: the t-test at the level that look may spend
        p = float(2 * stats.t.sf(t_abs, looks[0] - 1))
        fraction = min(1.0, looks[0] / n_max)
        if fraction >= 1.0:
            return p
        if float(spent(spending, fraction, 1.0)) <= p:
            return 1.0
        return float(
            optimize.brentq(lambda a: float(spent(spending, fraction, a)) - p, 1e-300, 1.0)
        )
    levels, crits = _p_table(looks, spending, n_max, alpha)
    if t_abs >= crits[0]:
        return float(levels[0])
    if t_abs <= crits[-1]:
        return 1.0
    # crits decrease as the level grows: interpolate log(level) against the critical value
    return float(np.exp(np.interp(-t_abs, -crits, np.log(levels))))


_LEVELS = (1e-8, 1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


@lru_cache(maxsize=256)
def _p_table(
    looks: tuple[int, ...], spending: Spending, n_max: int, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    levels = np.array(sorted({*_LEVELS, alpha}))
    crits = np.array([critical_values(looks, float(a), spending, n_max)[-1] for a in levels])
    crits = np.minimum.accumulate(crits)  # Monte Carlo noise must not break monotonicity
    return levels, crits


def decision_probability(delta, sd, n, n_max: int, c_max: float, rope: float):  # noqa: ANN001, ANN201 - floats or arrays
    """Plug-in probability that a row is decided by ``n_max`` seeds if the true mean
    difference and spread are the ones observed at ``n`` (the futility rule's input).

    The mean at n_max is the current mean plus that of the seeds still to come; the
    interval's half-width there is c_max·σ̂/√n_max. Normal approximation, elementwise.
    """
    delta, sd, n = (np.asarray(v, dtype=float) for v in (delta, sd, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        half = c_max * sd / math.sqrt(n_max)
        spread = sd * np.sqrt(np.maximum(n_max - n, 0.0)) / n_max  # sd of the final mean
        up = stats.norm.sf((rope + half - delta) / spread)
        down = stats.norm.cdf((-rope - half - delta) / spread)
        inside = np.maximum(
            0.0,
            stats.norm.cdf((rope - half - delta) / spread)
            - stats.norm.cdf((-rope + half - delta) / spread),
        )
        p = np.minimum(1.0, up + down + inside)
    # No spread: the interval is the point Δ̂ at every look, so it decides now or never.
    point = np.asarray(interval_decision(delta, delta, rope)) != UNDECIDED
    p = np.where(sd == 0, point.astype(float), np.where(n >= n_max, 1.0, p))
    return p.item() if p.ndim == 0 else p
