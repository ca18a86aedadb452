"""Statistics over tidy run frames. Every function is pure: a DataFrame in, a DataFrame
(or a small dataclass of DataFrames) out, no MLflow access."""

from analysis.stats.compare import compare_two, higher_is_better
from analysis.stats.convergence import (
    area_under_curve,
    compare_time_to_threshold,
    curve_bands,
    first_epoch,
    time_to_threshold,
)
from analysis.stats.cost import (
    break_even,
    cost_summary,
    cost_table,
    efficiency,
    value_at_equal_compute,
)
from analysis.stats.many import compare_many
from analysis.stats.multimodal import full_pattern, fusion_gain
from analysis.stats.multiplicity import adjust_pvalues
from analysis.stats.summary import iqm, mean_interval, summarize

__all__ = [
    "adjust_pvalues",
    "area_under_curve",
    "break_even",
    "compare_many",
    "compare_time_to_threshold",
    "compare_two",
    "cost_summary",
    "cost_table",
    "curve_bands",
    "efficiency",
    "first_epoch",
    "full_pattern",
    "fusion_gain",
    "higher_is_better",
    "iqm",
    "mean_interval",
    "summarize",
    "time_to_threshold",
    "value_at_equal_compute",
]
