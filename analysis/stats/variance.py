"""How much of a difference's uncertainty is the seeds', and how much the test set's.

A row's interval counts seed-to-seed variation only: every run is scored on the same,
finite test set, so a new test set from the same distribution would move Δ̂ too
(Bouthillier et al., 2021, "Accounting for variance in machine learning benchmarks").
Each fusion run logs its metrics on the same B resamples of the test rows
(``test_bootstrap.json``); replicate b of Δ is the arms' mean difference on resample b, and
the spread of those replicates is the test set's part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

VARIANCE_COLUMNS = [
    "n",
    "delta",
    "se_seeds",
    "se_test_set",
    "se_total",
    "test_set_share",
    "resamples",
    "run_ids_a",
    "run_ids_b",
]


def variance_components(
    comparison: pd.DataFrame,
    bootstraps: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    *,
    by: Sequence[str],
) -> pd.DataFrame:
    """One row per comparison row whose runs all logged a test-set bootstrap: the seed
    standard error (the row's own), the test set's (the sd of Δ over the shared
    resamples), their root sum of squares, and the test set's share of the variance.

    ``bootstraps``: run id -> pattern -> metric -> B replicate values.
    """
    rows = []
    for r in comparison.to_dict("records"):
        if r["design"] not in ("paired", "welch") or not math.isfinite(
            float(r.get("se", math.nan))
        ):
            continue
        pattern, metric = str(r["pattern"]), str(r["metric"])
        arms = []
        for column in ("run_ids_a", "run_ids_b"):
            ids = [i for i in str(r[column]).split(";") if i]
            found = [bootstraps.get(i, {}).get(pattern, {}).get(metric) for i in ids]
            if not ids or any(f is None for f in found):
                break
            arms.append(np.array(found, dtype=float))  # (runs, B)
        if len(arms) < 2 or arms[0].shape[1] != arms[1].shape[1]:
            continue
        replicates = np.nanmean(arms[0], axis=0) - np.nanmean(arms[1], axis=0)  # (B,)
        se_test = float(np.nanstd(replicates, ddof=1))
        se_seeds = float(r["se"])
        total = math.sqrt(se_seeds**2 + se_test**2)
        rows.append(
            {
                **{k: r[k] for k in by},
                "n": r["n_pairs"] or min(r["n_a"], r["n_b"]),
                "delta": r["delta"],
                "se_seeds": se_seeds,
                "se_test_set": se_test,
                "se_total": total,
                "test_set_share": se_test**2 / total**2 if total > 0 else math.nan,
                "resamples": arms[0].shape[1],
                "run_ids_a": r["run_ids_a"],
                "run_ids_b": r["run_ids_b"],
            }
        )
    return pd.DataFrame(rows, columns=[*by, *VARIANCE_COLUMNS])
