"""Aggregates across tasks, as rliable defines them (Agarwal et al., NeurIPS 2021).

A *task* is one modality pattern (of one dataset, when several are selected). Scores of
every run on every task are pooled per arm into the interquartile mean (IQM), and the
probability of improvement P(A > B) is the Mann–Whitney probability averaged over tasks.
Both get stratified bootstrap intervals: runs are resampled with replacement within each
task, independently per task and arm, as rliable does. rliable itself pins arch<8, which
breaks on pandas 3, so its two estimators are rebuilt here on numpy and scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats.compare import higher_is_better

AGGREGATE_COLUMNS = [
    "metric",
    "tasks",
    "a",
    "b",
    "iqm_a",
    "iqm_a_low",
    "iqm_a_high",
    "iqm_b",
    "iqm_b_low",
    "iqm_b_high",
    "iqm_delta",
    "iqm_delta_low",
    "iqm_delta_high",
    "p_improvement",
    "p_improvement_low",
    "p_improvement_high",
    "n_runs_a",
    "n_runs_b",
    "run_ids_a",
    "run_ids_b",
]


def aggregate_across_tasks(
    values: pd.DataFrame,
    *,
    a: str,
    b: str,
    arm: str = "condition",
    tasks: Sequence[str] = ("pattern",),
    by: Sequence[str] = ("metric",),
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per group of ``by`` (a metric, and any strata): IQM per arm over runs × tasks, the
    IQM difference, and the probability of improvement, each with a stratified bootstrap
    percentile interval. For lower-is-better metrics P(A > B) counts A lower as better."""
    rows = []
    rng = np.random.default_rng(seed)
    for key, group in values.groupby(list(by), sort=True, dropna=False):
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        sign = 1.0 if higher_is_better(str(labels.get("metric", ""))) else -1.0
        per_task = []
        for _, task in group.groupby(list(tasks), sort=True):
            xa = task.loc[task[arm] == a, "value"].dropna().to_numpy(dtype=float)
            xb = task.loc[task[arm] == b, "value"].dropna().to_numpy(dtype=float)
            if len(xa) and len(xb):
                per_task.append((xa, xb))
        if not per_task:
            continue
        point = _statistics(per_task, sign)
        boot = np.array(
            [
                _statistics(
                    [
                        (x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))])
                        for x, y in per_task
                    ],
                    sign,
                )
                for _ in range(resamples)
            ]
        )
        tail = (1 - confidence) / 2
        low, high = np.quantile(boot, tail, axis=0), np.quantile(boot, 1 - tail, axis=0)
        used = group[group[arm].isin([a, b]) & group["value"].notna()]
        ids = (
            {
                name: ";".join(dict.fromkeys(map(str, used.loc[used[arm] == name, "run_id"])))
                for name in (a, b)
            }
            if "run_id" in used
            else {a: "", b: ""}
        )
        rows.append(
            {
                **labels,
                "tasks": len(per_task),
                "a": a,
                "b": b,
                "iqm_a": point[0],
                "iqm_a_low": low[0],
                "iqm_a_high": high[0],
                "iqm_b": point[1],
                "iqm_b_low": low[1],
                "iqm_b_high": high[1],
                "iqm_delta": point[2],
                "iqm_delta_low": low[2],
                "iqm_delta_high": high[2],
                "p_improvement": point[3],
                "p_improvement_low": low[3],
                "p_improvement_high": high[3],
                "n_runs_a": used.loc[used[arm] == a, "run_id"].nunique() if "run_id" in used else 0,
                "n_runs_b": used.loc[used[arm] == b, "run_id"].nunique() if "run_id" in used else 0,
                "run_ids_a": ids[a],
                "run_ids_b": ids[b],
            }
        )
    columns = [*by, *(c for c in AGGREGATE_COLUMNS if c not in by)]
    return pd.DataFrame(rows, columns=columns)


def _statistics(per_task: list[tuple[np.ndarray, np.ndarray]], sign: float) -> np.ndarray:
    """(IQM of a, IQM of b, their difference, probability of improvement)."""
    pooled_a = np.concatenate([x for x, _ in per_task])
    pooled_b = np.concatenate([y for _, y in per_task])
    iqm_a, iqm_b = stats.trim_mean(pooled_a, 0.25), stats.trim_mean(pooled_b, 0.25)
    improvement = np.mean(
        [
            np.mean((sign * x[:, None] > sign * y[None, :]) + 0.5 * (x[:, None] == y[None, :]))
            for x, y in per_task
        ]
    )
    return np.array([iqm_a, iqm_b, iqm_a - iqm_b, improvement])
