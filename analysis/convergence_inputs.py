"""The frames the convergence and cost sections are computed from: validation curves per
run, the threshold they are timed to, first-epoch values, and the break-even table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.stats import break_even, first_epoch
from analysis.stats.convergence import SurvivalComparison
from tsp_mlflow.tracking import schema

if TYPE_CHECKING:
    from analysis.results import AnalysisInputs, AnalysisSettings


def validation_curves(inputs: AnalysisInputs, key: str) -> pd.DataFrame:
    """Each run's validation curve of ``key`` by epoch (empty, with its columns, when no
    history was fetched)."""
    from analysis.data import learning_curve_table

    if inputs.histories.empty:
        return pd.DataFrame(
            columns=["run_id", "condition", "seed", "fusion", "epoch", "value", "seconds"]
        )
    return learning_curve_table(inputs.histories, inputs.runs, key)


def auto_threshold(curves: pd.DataFrame, higher_better: bool) -> float:
    """95% of the median best validation value over runs (or 105% for lower-is-better):
    a level most runs reach, so the comparison is about speed, not about reaching it."""
    best = curves.groupby("run_id")["value"].agg("max" if higher_better else "min")
    return float(best.median() * (0.95 if higher_better else 1.05))


def first_epoch_frame(inputs: AnalysisInputs, curves: pd.DataFrame) -> pd.DataFrame:
    """First-epoch validation value (full pattern) and training loss per run."""
    first = first_epoch(curves).assign(quantity="first-epoch validation")
    loss = inputs.histories[inputs.histories["key"] == schema.TRAIN_LOSS]
    if loss.empty:
        return first
    loss = loss.sort_values("step").groupby("run_id").head(1)
    loss = loss.merge(inputs.runs[["run_id", "condition", "seed"]], on="run_id")
    loss = loss.assign(quantity="first-epoch train loss")[
        ["run_id", "condition", "seed", "quantity", "value"]
    ]
    return pd.concat(
        [first[["run_id", "condition", "seed", "quantity", "value"]], loss], ignore_index=True
    )


def break_even_table(
    cost: pd.DataFrame, survival: dict[str, SurvivalComparison], s: AnalysisSettings
) -> pd.DataFrame:
    """Fusion runs needed before A's pretraining pays for itself, on two bases: own
    training time per run, and (median) seconds to the validation threshold."""
    if not ({s.a, s.b} <= set(cost["condition"])):
        return pd.DataFrame()
    mean = cost.groupby("condition")[["own_s", "pretrain_s"]].mean()
    pretrain = float(mean.at[s.a, "pretrain_s"])
    ids = ";".join(map(str, cost.loc[cost["condition"].isin([s.a, s.b]), "run_id"]))
    rows = [
        {
            "basis": "own training time",
            "pretrain_s": pretrain,
            "saving_per_run_s": float(mean.at[s.b, "own_s"] - mean.at[s.a, "own_s"]),
            "run_ids": ids,
        }
    ]
    if "seconds" in survival:
        medians = survival["seconds"].summary.set_index("condition")["median"]
        rows.append(
            {
                "basis": "time to threshold (KM median)",
                "pretrain_s": pretrain,
                "saving_per_run_s": float(medians[s.b] - medians[s.a]),
                "run_ids": ids,
            }
        )
    frame = pd.DataFrame(rows)
    frame["break_even_k"] = [
        break_even(p, sv) if np.isfinite(sv) else np.inf
        for p, sv in zip(frame["pretrain_s"], frame["saving_per_run_s"], strict=True)
    ]
    return frame
