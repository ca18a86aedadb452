"""Pretrained vs scratch per pattern, paired by seed. A pure function of a tidy frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

COLUMNS = [
    "pattern", "n", "mean_a", "sd_a", "mean_b", "sd_b",
    "delta", "ci_low", "ci_high", "p_value", "n_unmatched", "n_averaged",
]  # fmt: skip


def paired_comparison(
    frame: pd.DataFrame, *, a: str = "pretrained", b: str = "scratch", confidence: float = 0.95
) -> pd.DataFrame:
    """Compare condition ``a`` with ``b`` for each pattern, pairing runs that share a seed.

    Args:
        frame: columns ``condition``, ``seed``, ``pattern``, ``value`` (one row per run and
            pattern, as :func:`analysis.runs.pattern_frame` returns).

    Returns:
        One row per pattern: ``n`` matched seeds; mean and sd of each arm over those seeds;
        ``delta`` = mean(a - b) with a t-based ``confidence`` CI; the paired-t ``p_value``;
        ``n_unmatched``, runs dropped because the other arm lacks their seed; and
        ``n_averaged``, runs that repeated an (arm, seed) already present and were
        averaged into it (e.g. two pipelines analysed together). With
        fewer than two pairs the CI and p-value are NaN rather than invented.
    """
    rows = []
    subset = frame[frame["condition"].isin([a, b])]
    for pattern, group in subset.groupby("pattern", sort=False):
        wide = group.pivot_table(index="seed", columns="condition", values="value", aggfunc="mean")
        wide = wide.reindex(columns=[a, b]).dropna()  # (n_pairs, 2): seeds present in both arms
        n = len(wide)
        unmatched = int((~group["seed"].isin(wide.index)).sum())
        averaged = int(len(group) - len(group[["condition", "seed"]].drop_duplicates()))
        xa, xb = wide[a].to_numpy(), wide[b].to_numpy()
        diff = xa - xb
        delta = float(diff.mean()) if n else float("nan")
        ci_low = ci_high = p_value = float("nan")
        if n >= 2:
            sem = stats.sem(diff)
            # Differences equal up to float noise: a t-statistic would be noise / noise.
            if np.ptp(diff) > 1e-12 * max(1.0, float(np.abs(diff).max())):
                ci_low, ci_high = stats.t.interval(confidence, n - 1, loc=delta, scale=sem)
                p_value = float(stats.ttest_rel(xa, xb).pvalue)
            else:  # every pair differs by the same amount: a point CI, and no t-test exists
                ci_low = ci_high = delta
        rows.append(
            {
                "pattern": pattern,
                "n": n,
                "mean_a": float(xa.mean()) if n else float("nan"),
                "sd_a": float(xa.std(ddof=1)) if n >= 2 else float("nan"),
                "mean_b": float(xb.mean()) if n else float("nan"),
                "sd_b": float(xb.std(ddof=1)) if n >= 2 else float("nan"),
                "delta": delta,
                "ci_low": float(ci_low),
                "ci_high": float(ci_high),
                "p_value": p_value,
                "n_unmatched": unmatched,
                "n_averaged": averaged,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
