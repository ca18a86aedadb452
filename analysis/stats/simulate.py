"""Simulated sequential experiments: how the adaptive-seed rule behaves, in seconds.

Each experiment is a family of ``m`` rows (patterns × metrics) whose paired differences,
in units of their standard deviation, have true means ``deltas``. The rule is the one
:func:`analysis.stats.compare.compare_two` applies (the same critical values, the same
:func:`~analysis.stats.sequential.interval_decision`, the same futility input), vectorised
over experiments; ``tests/unit/test_sequential.py`` checks that the two agree verdict for
verdict. Used by the unit tests, ``bench/sequential_seeds.py`` and docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from analysis.stats.sequential import (
    UNDECIDED,
    SequentialDesign,
    critical_values,
    decision_probability,
    interval_decision,
)

Rule = Literal["sequential", "naive", "fixed"]
Distribution = Literal["normal", "skewed", "heavy"]


@dataclass
class Simulation:
    """Per experiment: each row's decision (UP/DOWN/INSIDE/UNDECIDED), the look and seed
    count it stopped at, and whether each row's final interval covers the truth."""

    deltas: np.ndarray  # (m,)
    decisions: np.ndarray  # (reps, m)
    stop_n: np.ndarray  # (reps,)
    covered: np.ndarray  # (reps, m)

    def any_difference(self) -> float:
        """The share of experiments declaring any row different (the A/A error rate)."""
        return float(np.isin(self.decisions, (1, -1)).any(axis=1).mean())

    def power(self, row: int = 0) -> float:
        """The share that decided ``row`` in its true direction (UP for a positive Δ)."""
        want = 1 if self.deltas[row] > 0 else -1
        return float((self.decisions[:, row] == want).mean())

    def coverage(self) -> float:
        """The share of rows whose interval at the stop covers their true Δ."""
        return float(self.covered.mean())


def differences(
    rng: np.random.Generator,
    reps: int,
    deltas: np.ndarray,
    n: int,
    corr: float,
    distribution: Distribution,
) -> np.ndarray:
    """(reps, m, n) paired differences with unit spread, means ``deltas``, and correlation
    ``corr`` between rows of one seed (accuracy and F1 of one model move together)."""
    m = len(deltas)
    z = rng.standard_normal((reps, m, n))
    if corr:
        z = math.sqrt(corr) * rng.standard_normal((reps, 1, n)) + math.sqrt(1 - corr) * z
    if distribution == "skewed":  # standardised exponential: mean 0, sd 1, skewness 2
        z = -np.log(stats.norm.sf(z)) - 1.0
    elif distribution == "heavy":  # t with 3 degrees of freedom, unit variance
        z = z / np.sqrt(rng.chisquare(3, z.shape) / 3) / math.sqrt(3)
    return z + deltas[None, :, None]


def simulate(
    design: SequentialDesign,
    deltas: Sequence[float],
    *,
    rope: float = 0.0,
    alpha: float = 0.05,
    reps: int = 1000,
    headline: Sequence[int] = (0,),
    corr: float = 0.0,
    distribution: Distribution = "normal",
    rule: Rule = "sequential",
    seed: int = 0,
) -> Simulation:
    """``reps`` experiments under ``rule``: ``sequential`` (repeated CIs, the pipeline's
    rule), ``naive`` (fixed-sample intervals at every look: peeking) or ``fixed`` (one
    look at ``design.max``). Rows are a Bonferroni family of ``len(deltas)``; an
    experiment stops when its ``headline`` rows are decided, or for futility."""
    deltas = np.asarray(deltas, dtype=float)
    m = len(deltas)
    alpha_row = alpha / m
    looks = (design.max,) if rule == "fixed" else design.looks
    if rule == "sequential":
        crits = critical_values(looks, alpha_row, design.spending, design.max)
    else:
        crits = tuple(float(stats.t.isf(alpha_row / 2, n - 1)) for n in looks)
    rng = np.random.default_rng(seed)
    d = differences(rng, reps, deltas, design.max, corr, distribution)
    decisions = np.full((reps, m), UNDECIDED)
    low = np.full((reps, m), np.nan)
    high = np.full((reps, m), np.nan)
    stop_n = np.full(reps, looks[-1])
    active = np.ones(reps, dtype=bool)
    heads = list(headline)
    for n, c in zip(looks, crits, strict=True):
        x = d[:, :, :n]
        mean, sd = x.mean(axis=2), x.std(axis=2, ddof=1)
        lo, hi = mean - c * sd / math.sqrt(n), mean + c * sd / math.sqrt(n)
        now = interval_decision(lo, hi, rope)
        fresh = active[:, None] & (decisions == UNDECIDED)
        decisions = np.where(fresh, now, decisions)
        low[active], high[active] = lo[active], hi[active]
        done = (decisions[:, heads] != UNDECIDED).all(axis=1)
        if rule != "fixed" and design.futility > 0 and n < design.max:
            chance = decision_probability(mean, sd, n, design.max, crits[-1], rope)
            open_rows = decisions[:, heads] == UNDECIDED
            done |= (open_rows & (chance[:, heads] < design.futility)).any(axis=1)
        stop_n[active & done] = n
        active &= ~done
        if not active.any():
            break
    covered = (low <= deltas[None, :]) & (deltas[None, :] <= high)
    return Simulation(deltas, decisions, stop_n, covered)


def fixed_power(n: int, delta: float, alpha_row: float, rope: float = 0.0) -> float:
    """A fixed design's power with n seeds: P(its 1 − alpha_row interval clears the ROPE
    in Δ's direction), Δ in units of the differences' sd."""
    c = stats.t.isf(alpha_row / 2, n - 1)
    return float(stats.nct.sf(c, n - 1, (abs(delta) - rope) * math.sqrt(n)))


def fixed_seeds_for(power: float, delta: float, alpha_row: float, rope: float = 0.0) -> int:
    """The fewest seeds at which a fixed design reaches ``power`` (capped at 0.999)."""
    target = min(power, 0.999)
    n = 2
    while fixed_power(n, delta, alpha_row, rope) < target:
        n += 1
    return n


def operating_characteristics(
    design: SequentialDesign, *, reps: int = 20_000, rows: int = 6, seed: int = 0
) -> list[dict[str, object]]:
    """The table of docs/statistics.md: for the sequential rule, naive peeking and a fixed
    design at ``design.max`` seeds, the A/A family-wise error (``rows`` independent null
    rows, every look taken) and, for Δ = 0.5, 1, 2 sd on two correlated headline rows,
    power, mean seeds and the coverage of every row's interval at the stop."""
    table = []
    no_futility = SequentialDesign(
        min=design.min, step=design.step, max=design.max, spending=design.spending, futility=0.0
    )
    for rule, label in (
        ("sequential", "repeated CIs (seeds=auto)"),
        ("naive", "naive peeking: fixed-n intervals at every look"),
        ("fixed", f"fixed design, {design.max} seeds"),
    ):
        aa = simulate(
            no_futility, [0.0] * rows, reps=reps, headline=range(rows), seed=seed, rule=rule
        )  # type: ignore[arg-type]
        row: dict[str, object] = {"rule": label, "A/A FWER": aa.any_difference()}
        for distribution in ("skewed", "heavy"):
            other = simulate(
                no_futility,
                [0.0] * rows,
                reps=reps,
                headline=range(rows),
                seed=seed + 1,
                rule=rule,
                distribution=distribution,
            )  # type: ignore[arg-type]
            row[f"A/A FWER, {distribution}"] = other.any_difference()
        for delta in (0.5, 1.0, 2.0):
            sim = simulate(
                design,
                [delta, delta] + [0.0] * (rows - 2),
                reps=reps,
                headline=(0, 1),
                corr=0.9,
                seed=seed + 2,
                rule=rule,
            )  # type: ignore[arg-type]
            row[f"power Δ={delta:g}"] = sim.power(0)
            row[f"mean seeds Δ={delta:g}"] = float(sim.stop_n.mean())
            row[f"coverage Δ={delta:g}"] = sim.coverage()
        table.append(row)
    return table


if __name__ == "__main__":  # python -m analysis.stats.simulate: docs/statistics.md's table
    for line in operating_characteristics(SequentialDesign()):
        print(line)
