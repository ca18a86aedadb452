"""Comparisons along a method axis (fusion, missing rate, gradient, imputation, dataset):
the levels of one factor compared within every group that crosses all of them."""

from __future__ import annotations

import pandas as pd

from analysis.stats import compare_many, compare_two
from analysis.stats.many import ManyResult
from tsp_mlflow.tracking import schema

AxisResult = ManyResult | pd.DataFrame | None
# Strata of the main comparison, and the factors compared level against level.
METHOD_AXES = ("dataset", "fusion", "missing", "gradient", "imputation")
# Level order: Δ = a − b is "the method minus its baseline".
GRADIENT_ORDER = ("mmpareto", "uniform", schema.GRADIENT_JOINT)
IMPUTATION_ORDER = ("predicted", schema.IMPUTATION_NONE)
OBJECTIVE_ORDER = (schema.CONDITION_CONTRASTIVE, schema.CONDITION_PRETRAINED)


def compare_axis(
    values: pd.DataFrame,
    axis: str,
    levels: list[str],
    others: tuple[str, ...],
    common: dict[str, object],
    keep: tuple[str, ...] = (),
) -> AxisResult:
    """The levels of ``axis`` compared within every group of ``others`` × pattern × metric
    that has all of them (paired by seed); ``others`` constant there are left out of the
    table unless in ``keep``. Two levels with :func:`compare_two`
    (Δ = levels[0] − levels[1]), three or more with :func:`compare_many`. None when no
    group crosses every level."""
    if len(levels) < 2:
        return None
    data = complete_groups(values[values[axis].isin(levels)], axis, levels, others)
    if data.empty:
        return None
    shown = (o for o in others if o in keep or data[o].nunique(dropna=False) > 1)
    by = (*shown, "pattern", "metric")
    if len(levels) == 2:
        return compare_two(data, a=levels[0], b=levels[1], arm=axis, by=by, **common)
    return compare_many(
        data,
        arm=axis,
        block=str(common["pair_on"]),
        by=by,
        alpha=float(common["alpha"]),
        correction=common["correction"],
    )  # type: ignore[arg-type]


def complete_groups(
    values: pd.DataFrame, axis: str, levels: list[str], others: tuple[str, ...]
) -> pd.DataFrame:
    """The rows of ``values`` whose group of ``others`` holds every level of ``axis``."""
    if not others or values.empty:
        return values if set(levels) <= set(values[axis]) else values.iloc[0:0]
    count = values.groupby(list(others), dropna=False)[axis].transform("nunique")
    return values[count == len(levels)]
