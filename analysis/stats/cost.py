"""Compute cost including the pretraining a fusion run consumed.

Inputs are two frames. *fusion*: one row per fusion run with ``run_id``, the arm column,
``seed`` and ``own_s`` (its own wall time). *lineage*: one row per (fusion run, encoder)
with ``run_id``, ``modality``, ``pretrain_run_id`` and ``pretrain_s`` (that pretrain
run's own time); scratch encoders have no row.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COST_COLUMNS = [
    "run_id",
    "condition",
    "seed",
    "own_s",
    "pretrain_s",
    "pretrain_amortised_s",
    "total_s",
    "total_amortised_s",
    "reuses",
]


def cost_table(
    fusion: pd.DataFrame, lineage: pd.DataFrame, *, arm: str = "condition"
) -> pd.DataFrame:
    """Per fusion run: own time, pretraining fully counted, and pretraining amortised.

    Amortised: each pretrain run's time is divided by ``reuses``, the number of fusion
    runs in ``fusion`` that consumed it, so summing amortised totals over the runs
    counts every pretraining second exactly once.
    """
    # A contrastive pretrain run feeds several encoders of one fusion run: count it once.
    lineage = lineage[lineage["run_id"].isin(fusion["run_id"])].drop_duplicates(
        ["run_id", "pretrain_run_id"]
    )
    reuses = lineage.groupby("pretrain_run_id")["run_id"].nunique()
    shares = lineage.assign(
        reuses=lineage["pretrain_run_id"].map(reuses),
        amortised=lambda x: x["pretrain_s"] / x["reuses"],
    )
    per_run = shares.groupby("run_id").agg(
        pretrain_s=("pretrain_s", "sum"),
        pretrain_amortised_s=("amortised", "sum"),
        reuses=("reuses", "min"),
    )
    table = fusion[["run_id", arm, "seed", "own_s"]].merge(per_run, on="run_id", how="left")
    table[["pretrain_s", "pretrain_amortised_s"]] = table[
        ["pretrain_s", "pretrain_amortised_s"]
    ].fillna(0.0)
    table["reuses"] = table["reuses"].fillna(0).astype(int)
    table["total_s"] = table["own_s"] + table["pretrain_s"]
    table["total_amortised_s"] = table["own_s"] + table["pretrain_amortised_s"]
    return table.rename(columns={arm: "condition"})[COST_COLUMNS]


def cost_summary(cost: pd.DataFrame, *, a: str, b: str) -> pd.DataFrame:
    """Mean seconds per condition, and A's extra total compute over B in percent.

    ``extra_pct`` is (mean total of A − mean total of B) / mean total of B × 100, fully
    counted and amortised (the thesis's "+128% compute" figure is the fully counted one).
    """
    means = cost.groupby("condition")[
        ["own_s", "pretrain_s", "pretrain_amortised_s", "total_s", "total_amortised_s"]
    ].mean()
    means["n"] = cost.groupby("condition").size()
    means["run_ids"] = cost.groupby("condition")["run_id"].agg(lambda ids: ";".join(map(str, ids)))
    summary = means.reset_index()
    if a in means.index and b in means.index:
        for column, name in (
            ("total_s", "extra_pct"),
            ("total_amortised_s", "extra_amortised_pct"),
        ):
            summary[name] = np.where(
                summary["condition"] == a,
                (means.at[a, column] - means.at[b, column]) / means.at[b, column] * 100.0,
                np.nan,
            )
    return summary


def break_even(pretrain_s: float, saving_s: float) -> float:
    """Fusion runs needed before pretraining pays for itself: pretrain_s / saving per run.

    ``inf`` when pretraining saves no time per run (it may still buy accuracy)."""
    if not math.isfinite(saving_s) or saving_s <= 0:
        return math.inf
    return pretrain_s / saving_s


def value_at_equal_compute(
    curves: pd.DataFrame, cost: pd.DataFrame, *, a: str, b: str, arm: str = "condition"
) -> pd.DataFrame:
    """Best validation value each arm reached within the same total compute.

    A run's compute after epoch e is its pretraining cost (fully counted or amortised,
    the ``basis``) plus its cumulative own seconds. For each seed, the budget is the
    smaller of the two arms' final compute, and each arm scores the best value among the
    epochs that finished within it; ``value`` is NaN when none did (e.g. pretraining
    alone took longer than the whole scratch run).
    """
    offsets = cost.set_index("run_id")[["pretrain_s", "pretrain_amortised_s"]]
    rows = []
    for basis, column in (("full", "pretrain_s"), ("amortised", "pretrain_amortised_s")):
        run_compute = curves.assign(
            compute=curves["seconds"] + curves["run_id"].map(offsets[column]).fillna(0.0)
        )
        finals = run_compute.groupby("run_id")["compute"].max()
        pairs = run_compute[run_compute[arm].isin([a, b])].groupby("seed")
        for seed, group in pairs:
            if group[arm].nunique() < 2:
                continue
            budget = min(finals[r] for r in group["run_id"].unique())
            for run_id, run in group.groupby("run_id"):
                within = run[run["compute"] <= budget + 1e-9]
                rows.append(
                    {
                        "run_id": run_id,
                        arm: run[arm].iloc[0],
                        "seed": seed,
                        "basis": basis,
                        "budget_s": float(budget),
                        "epochs": len(within),
                        "value": float(within["value"].max()) if len(within) else np.nan,
                    }
                )
    return pd.DataFrame(
        rows, columns=["run_id", arm, "seed", "basis", "budget_s", "epochs", "value"]
    )


def efficiency(values: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    """The thesis's efficiency ratio per run: metric value per minute of compute, on the
    run's own time, fully counted and amortised."""
    merged = values.merge(cost[["run_id", "own_s", "total_s", "total_amortised_s"]], on="run_id")
    for column, name in (
        ("own_s", "per_min_own"),
        ("total_s", "per_min_total"),
        ("total_amortised_s", "per_min_amortised"),
    ):
        merged[name] = merged["value"] / (merged[column] / 60.0)
    return merged
