"""Comparing a factor across a grid of several blocks: only the groups that run every
level are compared, paired by seed; constant columns are left out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.method_axes import compare_axis
from analysis.stats.many import ManyResult

COMMON = {
    "alpha": 0.05,
    "confidence": 0.95,
    "correction": "holm",
    "rope": 0.01,
    "seed": 0,
    "pair_on": "seed",
}


def frame(rows: list[tuple[str, str, str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["condition", "gradient", "imputation", "missing", "seed", "value"]
    ).assign(pattern="audio-image", metric="accuracy", run_id=lambda f: [f"r{i}" for i in f.index])


def test_only_groups_crossing_every_level_are_compared() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        for condition in ("scratch", "pretrained"):
            for gradient, shift in (("uniform", 0.0), ("mmpareto", 0.05)):
                rows.append(
                    (condition, gradient, "none", "0", seed, 0.5 + shift + rng.normal(0, 0.01))
                )
        # A block at missing 0.5 with only one gradient: it cannot inform the comparison.
        for imputation in ("none", "predicted"):
            rows.append(("pretrained", "uniform", imputation, "0.5", seed, 0.3))
    values = frame(rows)
    result = compare_axis(
        values, "gradient", ["mmpareto", "uniform"], ("condition", "missing", "imputation"), COMMON
    )
    assert isinstance(result, pd.DataFrame)
    # missing and imputation are constant where both gradients ran: not shown.
    assert "missing" not in result and "imputation" not in result
    assert sorted(result["condition"]) == ["pretrained", "scratch"]
    assert (result["n_pairs"] == 4).all() and (result["delta"] > 0.03).all()
    assert (result[["a", "b"]].to_numpy() == ["mmpareto", "uniform"]).all()

    kept = compare_axis(
        values,
        "imputation",
        ["predicted", "none"],
        ("condition", "missing", "gradient"),
        COMMON,
        keep=("missing",),
    )
    assert list(kept["missing"]) == ["0.5"] and kept["delta"].iloc[0] == 0.0


def test_three_levels_get_the_friedman_family_and_no_crossing_gives_none() -> None:
    rows = [
        ("scratch", g, "none", "0", s, v + 0.01 * s)
        for s in range(3)
        for g, v in (("joint", 0.4), ("uniform", 0.5), ("mmpareto", 0.6))
    ]
    values = frame(rows)
    result = compare_axis(
        values, "gradient", ["mmpareto", "uniform", "joint"], ("condition",), COMMON
    )
    assert isinstance(result, ManyResult)
    ranks = result.ranks.set_index("gradient")["avg_rank"]
    assert ranks["mmpareto"] == 1 and ranks["joint"] == 3
    apart = frame(
        [
            ("scratch", "uniform", "none", "0", 0, 0.5),
            ("pretrained", "mmpareto", "none", "0", 0, 0.6),
        ]
    )
    assert compare_axis(apart, "gradient", ["mmpareto", "uniform"], ("condition",), COMMON) is None
