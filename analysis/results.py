"""Every statistic of one analysis, computed from tidy frames (no MLflow access).

:func:`compute_results` is the whole analysis as a pure function: the ``analyze`` entry
point fetches :class:`AnalysisInputs` from the tracking server and renders the
:class:`Results` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.convergence_inputs import (
    auto_threshold,
    break_even_table,
    first_epoch_frame,
    validation_curves,
)
from analysis.errors import AnalysisInputError
from analysis.method_axes import (
    GRADIENT_ORDER,
    IMPUTATION_ORDER,
    METHOD_AXES,
    OBJECTIVE_ORDER,
    AxisResult,
    compare_axis,
    complete_groups,
)
from analysis.stats import (
    area_under_curve,
    compare_time_to_threshold,
    compare_two,
    cost_summary,
    cost_table,
    curve_bands,
    efficiency,
    full_pattern,
    fusion_gain,
    higher_is_better,
    summarize,
    time_to_threshold,
    value_at_equal_compute,
)
from analysis.stats.aggregate import aggregate_across_tasks
from analysis.stats.convergence import CurveBands, SurvivalComparison
from analysis.stats.many import ManyResult
from analysis.stats.multiplicity import CORRECTIONS, Correction
from analysis.stats.sequential import SequentialDesign
from analysis.stats.variance import variance_components
from tsp_mlflow.tracking import schema


@dataclass(frozen=True)
class AnalysisSettings:
    """What to compare and how. Every field is logged as a param of the analysis run.

    Args:
        a, b: the conditions compared (Δ = a − b).
        split: ``test`` (best-by-validation weights) or ``val`` (last epoch).
        metrics: per-pattern metrics; with the patterns they form one Holm family. Empty:
            the task's headline metrics, read from the runs' ``tsp.headline_metrics`` tag.
        pair_on: the column that pairs runs (seeds); runs without a partner are dropped.
        correction: the p-value correction over the family: ``bonferroni`` (the default:
            it matches the verdicts, which read Bonferroni-simultaneous intervals), ``holm``,
            ``bh``, ``by`` or ``none`` (then each row's interval has level 1 − alpha).
        rope: half-width of the region of practical equivalence, in metric units.
        threshold: validation value for time-to-threshold; None picks 95% of the median
            best validation value over all runs (logged, so it can be reused).
        curve_metric: the validation metric for convergence and cost (default: first of
            ``metrics``), always on the full pattern.
        seed: RNG seed for every bootstrap and Monte Carlo test.
    """

    a: str = schema.CONDITION_PRETRAINED
    b: str = schema.CONDITION_SCRATCH
    split: str = "test"
    metrics: tuple[str, ...] = ()
    pair_on: str = "seed"
    correction: Correction = "bonferroni"
    alpha: float = 0.05
    confidence: float = 0.95
    rope: float = 0.01
    threshold: float | None = None
    curve_metric: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        # Hydra and the CLI hand over lists or comma-separated strings.
        metrics = self.metrics.split(",") if isinstance(self.metrics, str) else self.metrics
        object.__setattr__(self, "metrics", tuple(m.strip() for m in metrics if m.strip()))
        if self.correction not in CORRECTIONS:
            raise AnalysisInputError(
                f"correction={self.correction!r} is unknown; choose one of {', '.join(CORRECTIONS)}"
            )
        if not 0 < self.alpha < 1 or not 0 < self.confidence < 1:
            raise AnalysisInputError(
                f"alpha={self.alpha} and confidence={self.confidence} must lie in (0, 1)"
            )
        if self.rope < 0:
            raise AnalysisInputError(f"rope={self.rope} must be ≥ 0 (metric units)")
        if self.a == self.b:
            raise AnalysisInputError(f"a and b are both {self.a!r}; compare two conditions")

    @property
    def history_metric(self) -> str:
        if not (self.curve_metric or self.metrics):
            raise AnalysisInputError("give at least one metric, e.g. --metric accuracy")
        return self.curve_metric or self.metrics[0]


@dataclass
class AnalysisInputs:
    """The exact snapshot an analysis reads; logged as ``analysis/inputs/*.csv``."""

    runs: pd.DataFrame  # data.runs_frame: one row per fusion run
    values: pd.DataFrame  # data.pattern_values: one row per (run, split, pattern, metric)
    histories: pd.DataFrame  # data.fetch_histories: run_id, key, step, value, timestamp
    lineage: pd.DataFrame  # data.lineage_frame: (fusion run, modality) -> pretrain run
    # data.select_runs_and_left_out: runs of the selection not FINISHED, and why
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)
    # data.test_bootstraps: run id -> pattern -> metric -> test-set bootstrap replicates
    bootstraps: dict = field(default_factory=dict)


@dataclass
class Results:
    settings: AnalysisSettings
    full_pattern: str
    curve_key: str
    threshold: float
    by: tuple[str, ...]
    comparison: pd.DataFrame
    summary: pd.DataFrame
    first_epoch: pd.DataFrame
    aulc: pd.DataFrame
    time_to_threshold: pd.DataFrame
    survival: dict[str, SurvivalComparison]
    bands: CurveBands | None
    curves: pd.DataFrame
    cost: pd.DataFrame
    cost_summary: pd.DataFrame
    break_even: pd.DataFrame
    equal_compute: pd.DataFrame
    equal_compute_values: pd.DataFrame
    efficiency: pd.DataFrame
    multimodal: pd.DataFrame
    multimodal_summary: pd.DataFrame
    lineage: pd.DataFrame
    conditions: ManyResult | None = None
    fusions: ManyResult | pd.DataFrame | None = None
    missing_rates: ManyResult | pd.DataFrame | None = None
    gradients: ManyResult | pd.DataFrame | None = None  # joint vs uniform vs mmpareto
    imputations: ManyResult | pd.DataFrame | None = None  # predicted vs none (zero-fill)
    objectives: ManyResult | pd.DataFrame | None = None  # contrastive vs supervised
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # data.runs_frame
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)  # linear probes, a vs b
    aggregate: pd.DataFrame = field(default_factory=pd.DataFrame)  # IQM, P(improvement)
    variance: pd.DataFrame = field(default_factory=pd.DataFrame)  # seeds vs the test set
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_id, reason, where
    design: SequentialDesign | None = None  # the adaptive-seed design the intervals use
    notes: list[str] = field(default_factory=list)


def compute_results(
    inputs: AnalysisInputs, settings: AnalysisSettings, design: SequentialDesign | None = None
) -> Results:
    """The whole analysis: comparison per pattern × metric, convergence, cost, fusion gain,
    and k-condition comparisons when the runs hold them. With ``design`` (an adaptive-seed
    pipeline), every two-arm interval is a repeated CI over its looks."""
    s = settings
    values = inputs.values[
        (inputs.values["split"] == s.split) & inputs.values["metric"].isin(s.metrics)
    ]
    if values.empty:
        known = sorted(inputs.values["metric"].unique()) if len(inputs.values) else []
        raise AnalysisInputError(
            f"no {s.split!r} values for metric(s) {', '.join(s.metrics)}; "
            f"metrics logged: {', '.join(known) or 'none'}"
        )
    notes: list[str] = []
    fusions = sorted(values["fusion"].dropna().unique())
    rates = sorted(values["missing"].dropna().unique(), key=_rate) if "missing" in values else []
    # A grid is compared cell by cell: one stratum per fusion method, missing rate,
    # gradient strategy and imputation that the runs vary.
    varying = [axis for axis in METHOD_AXES if axis in values and values[axis].nunique() > 1]
    common = {
        "alpha": s.alpha,
        "confidence": s.confidence,
        "correction": s.correction,
        "rope": s.rope,
        "seed": s.seed,
        "pair_on": s.pair_on,
        "design": design,
    }
    # A grid of several blocks crosses a and b only in some cells: compare those, in one
    # stratum per level of every factor that varies there.
    all_values = values  # every cell, for the per-factor comparisons below
    arms = values[values["condition"].isin([s.a, s.b])]
    crossed = complete_groups(arms, "condition", [s.a, s.b], tuple(varying))
    if crossed.empty:
        notes.append(
            f"no grid cell runs both {s.a} and {s.b} with the same settings; they are "
            "compared across cells that differ in other factors"
        )
    elif len(crossed) < len(arms):
        notes.append(
            f"{s.a} vs {s.b} (and its convergence, cost and probes) uses only the grid cells "
            "that run both; the other cells appear in the method comparisons"
        )
        # Runs of a or b in cells the other arm lacks would bias every a-vs-b quantity.
        dropped = set(arms["run_id"]) - set(crossed["run_id"])
        values = values[~values["run_id"].isin(dropped)]
        inputs = _without_runs(inputs, dropped)
    strata = tuple(a for a in varying if values[a].nunique() > 1)
    by = (*strata, "pattern", "metric")
    comparison = compare_two(values, a=s.a, b=s.b, by=by, **common)
    summary = summarize(values, by=("condition", *by), confidence=s.confidence, seed=s.seed)
    tasks = (
        ("dataset", "pattern")
        if "dataset" in values and values["dataset"].nunique() > 1
        else ("pattern",)
    )
    aggregate = aggregate_across_tasks(
        values,
        a=s.a,
        b=s.b,
        tasks=tasks,
        by=(*strata, "metric"),
        confidence=s.confidence,
        seed=s.seed,
    )

    full = full_pattern(list(values["pattern"].unique()))
    curve_key = schema.metric_key("val", full, s.history_metric)
    curves = validation_curves(inputs, curve_key)
    better = higher_is_better(s.history_metric)
    empty = pd.DataFrame()
    # Seconds need `time/epoch_s` for every epoch; runs logged without it get epochs only.
    timed = len(curves) > 0 and bool(curves["seconds"].notna().all())
    if curves.empty:
        notes.append(f"no history of {curve_key}: convergence and compute-matched results skipped")
        threshold = float("nan")
        ttt, survival, bands, first, aulc = empty, {}, None, empty, empty
    else:
        threshold = s.threshold if s.threshold is not None else auto_threshold(curves, better)
        ttt = time_to_threshold(curves, threshold, higher_better=better)
        if not timed:
            notes.append(f"some runs lack {schema.TIME_EPOCH}: time-based results use epochs only")
        survival = {
            duration: compare_time_to_threshold(
                ttt, a=s.a, b=s.b, duration=duration, confidence=s.confidence
            )
            for duration in (("epochs", "seconds") if timed else ("epochs",))
        }
        bands = curve_bands(
            curves,
            a=s.a,
            b=s.b,
            confidence=s.confidence,
            alpha=s.alpha,
            correction=s.correction,
            rope=s.rope,
            seed=s.seed,
        )
        first = first_epoch_frame(inputs, curves)
        aulc = area_under_curve(curves).assign(quantity=f"AULC val {s.history_metric}")
    first_cmp = (
        compare_two(first, a=s.a, b=s.b, by=("quantity",), **common) if len(first) else empty
    )
    aulc_cmp = compare_two(aulc, a=s.a, b=s.b, by=("quantity",), **common) if len(aulc) else empty

    cost = cost_table(inputs.runs, inputs.lineage)
    costs = cost_summary(cost, a=s.a, b=s.b)
    even = break_even_table(cost, survival, s)
    eq_values = value_at_equal_compute(curves, cost, a=s.a, b=s.b) if timed else empty
    eq_cmp = (
        compare_two(eq_values, a=s.a, b=s.b, by=("basis",), **common)
        if len(eq_values) and eq_values["value"].notna().groupby(eq_values["condition"]).any().all()
        else empty
    )
    if len(eq_values) and eq_cmp.empty:
        notes.append("at equal compute one arm finished no epoch within the budget; no comparison")
    full_values = values[values["pattern"] == full]
    per_min = ["per_min_own", "per_min_total", "per_min_amortised"]
    eff_runs = efficiency(full_values, cost)[["run_id", "condition", "metric", *per_min]]
    eff = summarize(
        eff_runs.melt(
            id_vars=["run_id", "condition", "metric"], value_vars=per_min, var_name="basis"
        ),
        by=("condition", "metric", "basis"),
        confidence=s.confidence,
        seed=s.seed,
    )

    gain = fusion_gain(values)
    gain_summary = (
        summarize(
            gain, by=("condition", "metric", "quantity"), confidence=s.confidence, seed=s.seed
        )
        if len(gain)
        else empty
    )
    gain_cmp = (
        compare_two(gain, a=s.a, b=s.b, by=("metric", "quantity"), **common) if len(gain) else empty
    )

    values = all_values

    def axis(name: str, levels: list[str], frame: pd.DataFrame = values) -> AxisResult:
        others = tuple(a for a in ("condition", *varying) if a != name)
        keep = ("missing",) if name == "imputation" else ()  # "across missing rates"
        try:
            return compare_axis(frame, name, levels, others, common, keep)
        except AnalysisInputError as err:  # e.g. one seed: no complete blocks
            notes.append(f"no comparison across {name}: {err}")
            return None

    levels = sorted(values["condition"].dropna().unique())
    conditions = axis("condition", levels) if len(levels) >= 3 else None
    fusion_result = axis("fusion", fusions)
    missing_result = axis("missing", rates)  # Δ = lower rate − higher: what losing modalities costs
    gradient_levels = [g for g in GRADIENT_ORDER if g in set(values["gradient"])]
    imputation_levels = [i for i in IMPUTATION_ORDER if i in set(values["imputation"])]
    gradient_result = axis("gradient", gradient_levels)
    imputation_result = axis("imputation", imputation_levels)
    objective_result = None
    objectives = values[values["condition"].isin(OBJECTIVE_ORDER)]
    if objectives["condition"].nunique() == 2 and {s.a, s.b} != set(OBJECTIVE_ORDER):
        objective_result = axis("condition", list(OBJECTIVE_ORDER), objectives)

    probes = _probe_values(inputs.runs, strata)
    probe_cmp = (
        compare_two(probes, a=s.a, b=s.b, by=(*strata, "quantity"), **common)
        if len(probes)
        and probes["condition"].isin([s.a]).any()
        and probes["condition"].isin([s.b]).any()
        else empty
    )

    return Results(
        settings=s,
        full_pattern=full,
        curve_key=curve_key,
        threshold=threshold,
        by=by,
        comparison=comparison,
        summary=summary,
        first_epoch=first_cmp,
        aulc=aulc_cmp,
        time_to_threshold=ttt,
        survival=survival,
        bands=bands,
        curves=curves,
        cost=cost,
        cost_summary=costs,
        break_even=even,
        equal_compute=eq_cmp,
        equal_compute_values=eq_values,
        efficiency=eff,
        multimodal=gain_cmp,
        multimodal_summary=gain_summary,
        lineage=inputs.lineage,
        conditions=conditions,
        fusions=fusion_result,
        missing_rates=missing_result,
        gradients=gradient_result,
        imputations=imputation_result,
        objectives=objective_result,
        runs=inputs.runs,
        probes=probe_cmp,
        aggregate=aggregate,
        variance=variance_components(comparison, inputs.bootstraps, by=by),
        left_out=left_out_table(inputs.left_out, comparison),
        design=design,
        notes=notes,
    )


def left_out_table(not_finished: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """Every run an analysis did not count, once per (run, reason): runs of the selection
    that are not FINISHED, and runs a comparison row left out (no seed, no partner, NaN),
    with the rows that left them out."""
    rows = (
        [
            {"run_id": r["run_id"], "reason": r["reason"], "rows": "all"}
            for r in not_finished.to_dict("records")
        ]
        if len(not_finished)
        else []
    )
    found: dict[tuple[str, str], list[str]] = {}
    keys = [c for c in comparison.columns if c in (*METHOD_AXES, "dataset", "pattern", "metric")]
    for r in comparison.to_dict("records"):
        for entry in filter(None, str(r.get("run_ids_left_out") or "").split(";")):
            run_id, _, reason = entry.partition(" (")
            where = "/".join(str(r[k]) for k in keys)
            found.setdefault((run_id, reason.rstrip(")")), []).append(where)
    rows += [
        {"run_id": run_id, "reason": reason, "rows": ", ".join(where)}
        for (run_id, reason), where in found.items()
    ]
    return pd.DataFrame(rows, columns=["run_id", "reason", "rows"])


def _without_runs(inputs: AnalysisInputs, run_ids: set[str]) -> AnalysisInputs:
    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[~frame["run_id"].isin(run_ids)] if "run_id" in frame else frame

    return AnalysisInputs(
        runs=keep(inputs.runs),
        values=keep(inputs.values),
        histories=keep(inputs.histories),
        lineage=keep(inputs.lineage),
    )


def _probe_values(runs: pd.DataFrame, strata: tuple[str, ...]) -> pd.DataFrame:
    """Long frame of the runs' ``probe/<modality>/<metric>`` metrics (quantity, value)."""
    cols = [c for c in runs.columns if c.startswith("metrics.probe/")]
    if runs.empty or not cols:
        return pd.DataFrame()
    ids = ["run_id", "condition", "seed", *(c for c in strata if c in runs)]
    long = runs[ids + cols].melt(id_vars=ids, var_name="quantity", value_name="value")
    long["quantity"] = long["quantity"].str.removeprefix("metrics.")
    long["metric"] = long["quantity"].str.rsplit("/", n=1).str[-1]  # direction of "better"
    return long.dropna(subset=["value"])


def _rate(text: str) -> float:
    """Sort key of a ``tsp.missing.train`` tag: ``0.2``, or ``audio=0.9,...`` (by max)."""
    try:
        return float(text)
    except ValueError:
        return max(float(part.partition("=")[2]) for part in text.split(","))
