"""Per-group summaries: n, mean, sd, IQM and a confidence interval for the mean."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

# Below this many values a bootstrap CI under-covers badly; the t interval is the honest one.
BOOTSTRAP_MIN_N = 20
CIMethod = Literal["auto", "t", "bootstrap"]

SUMMARY_COLUMNS = ["n", "mean", "sd", "median", "iqm", "ci_low", "ci_high", "ci_method", "run_ids"]


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (rliable's robust aggregate)."""
    x = np.asarray(values, dtype=float)
    return float(stats.trim_mean(x, 0.25)) if len(x) else float("nan")


def mean_interval(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    method: CIMethod = "auto",
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float, str]:
    """A CI for the mean of ``values``: ``(low, high, method_used)``.

    ``auto`` uses the t interval below :data:`BOOTSTRAP_MIN_N` values and a BCa bootstrap
    above. A bootstrap whose BCa interval is undefined (e.g. all values equal) falls back
    to the percentile method, as scipy's BCa returns NaN there. Fewer than two values
    give ``(nan, nan, "none")``: one value has no spread to estimate.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return float("nan"), float("nan"), "none"
    mean = float(x.mean())
    if np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        return mean, mean, "degenerate"  # every value equal: there is no sampling spread
    if method == "t" or (method == "auto" and n < BOOTSTRAP_MIN_N):
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(x))
        return float(low), float(high), "t"
    return (
        *bootstrap_interval(x, np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed),
        "bootstrap",
    )


def bootstrap_interval(
    x: np.ndarray,
    statistic: Callable[..., np.ndarray],
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float]:
    """BCa bootstrap CI of ``statistic(x)``, percentile when BCa is undefined."""
    for method in ("BCa", "percentile"):
        result = stats.bootstrap(
            (x,),
            statistic,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            rng=np.random.default_rng(seed),
            vectorized=True,
            axis=-1,
        )
        low, high = result.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return float(low), float(high)
    return float("nan"), float("nan")


def summarize(
    frame: pd.DataFrame,
    *,
    by: Sequence[str] = ("condition",),
    value: str = "value",
    confidence: float = 0.95,
    method: CIMethod = "auto",
    seed: int = 0,
) -> pd.DataFrame:
    """One row per group of ``by``: n, mean, sd, median, IQM, a CI for the mean, and the
    runs behind it (``run_ids``, ``;``-separated, when the frame has ``run_id``)."""
    rows = []
    for key, group in frame.groupby(list(by), sort=True, dropna=False):
        used = group[group[value].notna()]
        x = used[value].to_numpy(dtype=float)
        low, high, method_used = mean_interval(x, confidence=confidence, method=method, seed=seed)
        rows.append(
            {
                **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                "n": len(x),
                "mean": float(x.mean()) if len(x) else float("nan"),
                "sd": float(x.std(ddof=1)) if len(x) >= 2 else float("nan"),
                "median": float(np.median(x)) if len(x) else float("nan"),
                "iqm": iqm(x),
                "ci_low": low,
                "ci_high": high,
                "ci_method": method_used,
                "run_ids": ";".join(dict.fromkeys(map(str, used["run_id"])))
                if "run_id" in used
                else "",
            }
        )
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])
