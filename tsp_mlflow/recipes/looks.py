"""Adaptive seeds (``seeds=auto``): which grid strata keep adding seeds after a look.

A *stratum* is a grid cell without its condition and seed: (fusion, missing rate,
gradient strategy, imputation). The closing analysis compares ``a`` with ``b`` within each
stratum; a stratum stops adding seeds when its full-pattern rows are all decided, when
the plug-in chance of deciding them by ``seeds.max`` falls below ``seeds.futility``, or
at the last look. The decisions themselves are the analysis's (repeated CIs): this module
only reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from analysis.stats.compare import INCONCLUSIVE
from analysis.stats.sequential import SequentialDesign
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.grid import Cell

AUTO = "auto"
Stratum = tuple[str, str, str, str]  # fusion, missing (as tagged), gradient, imputation
STRATUM_COLUMNS = ("fusion", "missing", "gradient", "imputation")
DECIDED = "decided"
FUTILITY = "futility"
NOT_COMPARED = "not compared"
MAX_REACHED = "seeds.max reached"


def parse_seeds(value: str | int) -> int | None:
    """``auto`` (None: adaptive) or a positive number of seeds (a fixed design)."""
    text = str(value).strip()
    if text.lower() == AUTO:
        return None
    try:
        seeds = int(text)
    except ValueError:
        seeds = 0
    if seeds < 1 or str(seeds) != text.lstrip("+"):
        raise UserInputError(
            f"seeds must be a positive integer or auto, got {value!r}; e.g. -P seeds=5 (a "
            "fixed design) or -P seeds=auto (adaptive: stops when decided)"
        )
    return seeds


def stratum_of(cell: Cell) -> Stratum:
    return (cell.fusion, f"{cell.missing:g}", cell.gradient, cell.imputation)


@dataclass(frozen=True)
class LookDecision:
    """What one look says about each stratum still adding seeds: None (go on) or why
    it stops, plus a one-line reason per stopped stratum for the console."""

    stops: dict[Stratum, str | None]
    reasons: dict[Stratum, str]


def decide_strata(
    comparison: pd.DataFrame,
    full_pattern: str,
    strata: Iterable[Stratum],
    design: SequentialDesign,
    *,
    last_look: bool,
) -> LookDecision:
    """Read a look's comparison table (compare_two rows) for every stratum in ``strata``."""
    stops: dict[Stratum, str | None] = {}
    reasons: dict[Stratum, str] = {}
    columns = [c for c in STRATUM_COLUMNS if c in comparison]
    headline = comparison[comparison["pattern"].astype(str) == full_pattern]
    for stratum in strata:
        rows = headline
        for column, value in zip(STRATUM_COLUMNS, stratum, strict=True):
            if column in columns:
                rows = rows[rows[column].astype(str) == value]
        undecided = rows[rows["verdict"] == INCONCLUSIVE]
        if rows.empty:
            stops[stratum], reasons[stratum] = NOT_COMPARED, "no a-vs-b rows in this stratum"
        elif undecided.empty:
            stops[stratum] = DECIDED
            reasons[stratum] = "every full-pattern row decided"
        elif design.futility > 0 and (undecided["p_decide_by_max"] < design.futility).any():
            hopeless = undecided[undecided["p_decide_by_max"] < design.futility]
            worst = hopeless.sort_values("p_decide_by_max").iloc[0]
            stops[stratum] = FUTILITY
            reasons[stratum] = (
                f"futility: P({worst['metric']} decided by {design.max} seeds) ≈ "
                f"{float(worst['p_decide_by_max']):.2f} < seeds.futility={design.futility:g}"
            )
        elif last_look:
            stops[stratum], reasons[stratum] = MAX_REACHED, f"seeds.max={design.max} reached"
        else:
            stops[stratum] = None
    if design.stop == "all" and not last_look and any(v is None for v in stops.values()):
        # every stratum keeps adding seeds until all of them would stop
        stops = {k: None if v in (DECIDED, FUTILITY) else v for k, v in stops.items()}
    return LookDecision(stops, reasons)


def stop_summary(reasons: Mapping[Stratum, str], kinds: Mapping[Stratum, str]) -> str:
    """The parent's ``tsp.seeds.stop``: one reason, or how many strata stopped for each."""
    compared = {k: v for k, v in kinds.items() if v != NOT_COMPARED}
    if not compared:
        return "no stratum compares both arms"
    if len(compared) == 1:
        return reasons[next(iter(compared))]
    counts: dict[str, int] = {}
    for kind in compared.values():
        counts[kind] = counts.get(kind, 0) + 1
    return "; ".join(f"{n} strata: {kind}" for kind, n in sorted(counts.items()))
