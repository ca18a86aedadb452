"""Convergence as statistics: time to a validation threshold (right-censored), area under
the learning curve, first-epoch values and learning-curve bands with significant epochs.

A *curves* frame has one row per (run, epoch): ``run_id``, the arm column, ``seed``,
``epoch`` (1-based), ``value`` (the validation metric) and ``seconds`` (cumulative own
training time at the end of that epoch).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.stats.compare import compare_two
from analysis.stats.multiplicity import Correction
from analysis.stats.summary import summarize

Duration = Literal["epochs", "seconds"]


def time_to_threshold(
    curves: pd.DataFrame, threshold: float, *, arm: str = "condition", higher_better: bool = True
) -> pd.DataFrame:
    """Per run: the first epoch (and its cumulative seconds) at which the validation value
    reaches ``threshold``. A run that never reaches it is right-censored at its last
    epoch: ``reached`` is False and the durations are how long it was observed."""
    rows = []
    for run_id, run in curves.sort_values("epoch").groupby("run_id", sort=False):
        hit = run["value"] >= threshold if higher_better else run["value"] <= threshold
        at = run[hit].iloc[0] if hit.any() else run.iloc[-1]
        rows.append(
            {
                "run_id": run_id,
                arm: at[arm],
                "seed": at.get("seed"),
                "reached": bool(hit.any()),
                "epochs": int(at["epoch"]),
                "seconds": float(at["seconds"]),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", arm, "seed", "reached", "epochs", "seconds"])


@dataclass
class SurvivalComparison:
    """Kaplan–Meier curves per arm and the log-rank test between two arms."""

    curves: pd.DataFrame  # arm, time, survival, ci_low, ci_high, run_ids (step knots)
    summary: pd.DataFrame  # arm, n, reached, censored, median (inf: not reached), run_ids
    statistic: float
    p_value: float
    note: str


def compare_time_to_threshold(
    ttt: pd.DataFrame,
    *,
    a: str,
    b: str,
    arm: str = "condition",
    duration: Duration = "epochs",
    confidence: float = 0.95,
) -> SurvivalComparison:
    """Kaplan–Meier estimate of P(not yet at the threshold) per arm, and a log-rank test.

    The median is the first time the survival estimate drops to 0.5 or below; ``inf``
    means more than half the runs of that arm were censored before reaching it.
    """
    data = {}
    curves, summary = [], []
    for name in (a, b):
        arm_rows = ttt[ttt[arm] == name]
        if arm_rows.empty:
            raise AnalysisInputError(f"no runs with {arm}={name!r} for time-to-threshold")
        times = arm_rows[duration].to_numpy(dtype=float)
        ids = ";".join(map(str, arm_rows["run_id"])) if "run_id" in arm_rows else ""
        reached = arm_rows["reached"].to_numpy(dtype=bool)
        data[name] = stats.CensoredData(uncensored=times[reached], right=times[~reached])
        fit = stats.ecdf(data[name])
        sf = fit.sf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = sf.confidence_interval(confidence)
        for t, s, lo, hi in zip(
            sf.quantiles, sf.probabilities, ci.low.probabilities, ci.high.probabilities, strict=True
        ):
            curves.append(
                {
                    arm: name,
                    "time": float(t),
                    "survival": float(s),
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "run_ids": ids,
                }
            )
        below = sf.quantiles[sf.probabilities <= 0.5]
        summary.append(
            {
                arm: name,
                "n": len(times),
                "reached": int(reached.sum()),
                "censored": int((~reached).sum()),
                "median": float(below[0]) if len(below) else math.inf,
                "run_ids": ids,
            }
        )
    events = sum(int(r["reached"]) for r in summary)
    if events == 0:
        statistic, p, note = float("nan"), float("nan"), "no run reached the threshold"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.logrank(data[a], data[b])
        statistic, p = float(result.statistic), float(result.pvalue)
        note = "" if np.isfinite(p) else "log-rank undefined (no variance at any event time)"
        if not np.isfinite(p):
            statistic, p = 0.0, 1.0
    return SurvivalComparison(pd.DataFrame(curves), pd.DataFrame(summary), statistic, p, note)


def area_under_curve(curves: pd.DataFrame, *, arm: str = "condition") -> pd.DataFrame:
    """Per run: the normalised area under the validation curve (trapezoid / epoch span),
    i.e. the curve's average height; a single epoch gives its value."""
    rows = []
    for run_id, run in curves.sort_values("epoch").groupby("run_id", sort=False):
        x, y = run["epoch"].to_numpy(dtype=float), run["value"].to_numpy(dtype=float)
        area = float(np.trapezoid(y, x) / (x[-1] - x[0])) if len(x) > 1 else float(y[0])
        rows.append(
            {
                "run_id": run_id,
                arm: run[arm].iloc[0],
                "seed": run["seed"].iloc[0],
                "value": area,
                "epochs": len(x),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", arm, "seed", "value", "epochs"])


def first_epoch(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: the row of its first logged epoch (the thesis's headline quantity)."""
    ordered = curves.sort_values("epoch")
    return ordered.groupby("run_id", sort=False).head(1).reset_index(drop=True)


@dataclass
class CurveBands:
    bands: pd.DataFrame  # arm, epoch, n, mean, ci_low, ci_high, ...
    differences: pd.DataFrame  # compare_two rows per epoch, family = all epochs


def curve_bands(
    curves: pd.DataFrame,
    *,
    a: str,
    b: str,
    arm: str = "condition",
    confidence: float = 0.95,
    alpha: float = 0.05,
    correction: Correction = "holm",
    rope: float = 0.01,
    seed: int = 0,
) -> CurveBands:
    """Mean curve with a CI band per arm and epoch, plus Δ per epoch paired by seed; the
    epochs form one family, so ``p_adjusted < alpha`` marks a significant epoch."""
    bands = summarize(curves, by=(arm, "epoch"), confidence=confidence, seed=seed)
    diffs = compare_two(
        curves,
        a=a,
        b=b,
        arm=arm,
        by=("epoch",),
        alpha=alpha,
        confidence=confidence,
        correction=correction,
        rope=rope,
        seed=seed,
    )
    diffs["significant"] = diffs["p_adjusted"] < alpha
    return CurveBands(bands, diffs)
