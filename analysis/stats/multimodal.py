"""Quantities that only exist for multimodal models: fusion gain and robustness.

Inputs are long per-pattern frames (``run_id``, arm, ``seed``, ``pattern``, ``metric``,
``value``) whose pattern names join modality names with ``-`` in dataset order, as the
tracking schema writes them (``audio``, ``image``, ``audio-image``).
"""

from __future__ import annotations

import pandas as pd

from analysis.stats.compare import higher_is_better

PATTERN_SEPARATOR = "-"


def members(pattern: str) -> list[str]:
    return str(pattern).split(PATTERN_SEPARATOR)


def full_pattern(patterns: list[str] | pd.Series) -> str:
    """The pattern with every modality: the one with the most members."""
    return max(patterns, key=lambda p: len(members(p)))


def fusion_gain(values: pd.DataFrame, *, arm: str = "condition") -> pd.DataFrame:
    """Per run and metric: ``fusion_gain`` = full pattern − best unimodal pattern (better
    = larger for higher-is-better metrics, smaller otherwise, so a positive gain always
    means fusion helps) and ``robustness/<m>`` = unimodal m / full pattern."""
    rows = []
    for (run_id, metric), run in values.groupby(["run_id", "metric"], sort=False):
        by_pattern = run.set_index("pattern")["value"]
        full = full_pattern(list(by_pattern.index))
        unimodal = {p: v for p, v in by_pattern.items() if len(members(p)) == 1}
        if not unimodal or full in unimodal:
            continue
        head = {
            "run_id": run_id,
            arm: run[arm].iloc[0],
            "seed": run["seed"].iloc[0],
            "metric": metric,
        }
        best = max(unimodal.values()) if higher_is_better(metric) else min(unimodal.values())
        gain = by_pattern[full] - best if higher_is_better(metric) else best - by_pattern[full]
        rows.append({**head, "quantity": "fusion_gain", "value": float(gain)})
        for pattern, value in unimodal.items():
            ratio = value / by_pattern[full] if by_pattern[full] != 0 else float("nan")
            rows.append({**head, "quantity": f"robustness/{pattern}", "value": float(ratio)})
    return pd.DataFrame(rows, columns=["run_id", arm, "seed", "metric", "quantity", "value"])
