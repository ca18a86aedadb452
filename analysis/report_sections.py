"""The report's sections past the headline: the sequential looks, aggregates across
patterns, variance, convergence, cost, multimodal quantities, method comparisons, and the
thesis-style tables. Each takes :class:`~analysis.results.Results` and returns tables."""

from __future__ import annotations

import pandas as pd

from analysis.comparison_table import comparison_table
from analysis.results import Results
from analysis.stats.many import ManyResult
from analysis.tables import Table, count, interval, num, percent, pm, pvalue, seconds


def looks_table(results: Results) -> list[Table]:
    """At which look each headline row was decided, for an adaptive-seed design."""
    design = results.design
    table = results.comparison
    if design is None or table.empty:
        return []
    rows = []
    keys = [c for c in results.by]
    for r in table.to_dict("records"):
        decided = r.get("decided_look")
        rows.append(
            {
                **{k: r[k] for k in keys},
                "looks taken": r.get("look"),
                "decided at look": "–" if pd.isna(decided) else int(decided),
                "seeds then": "–" if pd.isna(r.get("decided_n")) else int(r["decided_n"]),
                "verdict": r["verdict"],
            }
        )
    return [
        Table(
            f"Sequential looks ({design.describe()})",
            pd.DataFrame(rows),
            "Each look's interval is a repeated CI: a row is decided at the first look "
            "whose interval decides it, and that decision stands.",
        )
    ]


def aggregate_tables(results: Results) -> list[Table]:
    """rliable's aggregates across patterns: IQM and probability of improvement."""
    frame = results.aggregate
    if frame.empty:
        return []
    s = results.settings
    keys = [c for c in frame.columns if c in results.by]
    rows = [
        {
            **{k: r[k] for k in keys},
            "tasks": r["tasks"],
            f"IQM {s.a}": f"{num(r['iqm_a'])} {interval(r['iqm_a_low'], r['iqm_a_high'], signed=False)}",
            f"IQM {s.b}": f"{num(r['iqm_b'])} {interval(r['iqm_b_low'], r['iqm_b_high'], signed=False)}",
            "IQM Δ": f"{num(r['iqm_delta'], signed=True)} {interval(r['iqm_delta_low'], r['iqm_delta_high'])}",
            f"P({s.a} > {s.b})": f"{num(r['p_improvement'], 2)} {interval(r['p_improvement_low'], r['p_improvement_high'], 2, signed=False)}",
        }
        for r in frame.to_dict("records")
    ]
    return [
        Table(
            "Across patterns: interquartile mean and probability of improvement",
            pd.DataFrame(rows),
            "rliable's estimators (Agarwal et al. 2021): IQM of every run's score on "
            "every pattern; P(A > B) averaged over patterns; 95% stratified bootstrap "
            "intervals (runs resampled within each pattern).",
        )
    ]


def variance_tables(results: Results) -> list[Table]:
    """Seeds vs the finite test set: where each difference's uncertainty comes from."""
    frame = results.variance
    if frame.empty:
        return []
    keys = [c for c in frame.columns if c in results.by]
    rows = [
        {
            **{k: r[k] for k in keys},
            "n": r["n"],
            "Δ": num(r["delta"], signed=True),
            "se seeds": num(r["se_seeds"]),
            "se test set": num(r["se_test_set"]),
            "se both": num(r["se_total"]),
            "test-set share": percent(100 * r["test_set_share"], signed=False),
        }
        for r in frame.to_dict("records")
    ]
    return [
        Table(
            "Variance: seeds vs the finite test set",
            pd.DataFrame(rows),
            "se seeds: the standard error over seeds that every interval above uses; se "
            "test set: the sd of Δ over shared bootstrap resamples of the test rows "
            f"({int(frame['resamples'].iloc[0])} resamples); a large test-set share means a "
            "new test set would move Δ more than new seeds would.",
        )
    ]


def left_out_tables(results: Results) -> list[Table]:
    if results.left_out.empty:
        return []
    return [
        Table(
            "Runs left out",
            results.left_out.rename(columns={"rows": "where"}),
            "Runs of the selection that no number above counts, and why.",
        )
    ]


def convergence_tables(results: Results) -> list[Table]:
    s = results.settings
    tables = []
    if len(results.first_epoch):
        tables.append(
            comparison_table(results, results.first_epoch, "First epoch (thesis headline)")
        )
    if len(results.aulc):
        tables.append(comparison_table(results, results.aulc, "Area under the validation curve"))
    if results.survival:
        rows = []
        for duration, comparison in results.survival.items():
            for r in comparison.summary.to_dict("records"):
                median = seconds(r["median"]) if duration == "seconds" else count(r["median"])
                rows.append(
                    {
                        "duration": duration,
                        "condition": r["condition"],
                        "reached / n": f"{r['reached']} / {r['n']}",
                        "KM median": median,
                        "log-rank p": pvalue(comparison.p_value),
                    }
                )
        tables.append(
            Table(
                f"Time to {results.curve_key} ≥ {results.threshold:.4g}",
                pd.DataFrame(rows),
                "Kaplan–Meier; runs that never reached the threshold are right-censored at their "
                "last epoch. 'not reached': over half the runs were censored.",
            )
        )
    if results.bands is not None:
        d = results.bands.differences
        marked = ", ".join(str(e) for e in d[d["significant"]]["epoch"]) or "none"
        rows = [
            {
                "epoch": r["epoch"],
                "Δ": num(r["delta"], signed=True),
                "CI": interval(r["ci_low"], r["ci_high"]),
                f"p {s.correction}": pvalue(r["p_adjusted"]),
            }
            for r in d.to_dict("records")
        ]
        tables.append(
            Table(
                "Validation curve difference per epoch",
                pd.DataFrame(rows),
                f"Significant epochs after {s.correction} over epochs: {marked}.",
            )
        )
    return tables


def cost_tables(results: Results) -> list[Table]:
    s = results.settings
    rows = []
    for r in results.cost_summary.to_dict("records"):
        rows.append(
            {
                "condition": r["condition"],
                "n": r["n"],
                "fusion own": seconds(r["own_s"]),
                "pretraining (full)": seconds(r["pretrain_s"]),
                "pretraining (amortised)": seconds(r["pretrain_amortised_s"]),
                "total (full)": seconds(r["total_s"]),
                "total (amortised)": seconds(r["total_amortised_s"]),
                f"extra vs {s.b} (full | amortised)": f"{percent(r.get('extra_pct'))} | {percent(r.get('extra_amortised_pct'))}",
            }
        )
    tables = [
        Table(
            "Compute per fusion run, pretraining included",
            pd.DataFrame(rows),
            "Amortised: each pretrain run's time divided by the fusion runs that reused it.",
        )
    ]
    if len(results.break_even):
        rows = [
            {
                "basis": r["basis"],
                "pretraining": seconds(r["pretrain_s"]),
                "saving per run": seconds(r["saving_per_run_s"]),
                "break-even k": count(r["break_even_k"]),
            }
            for r in results.break_even.to_dict("records")
        ]
        tables.append(
            Table(
                "Break-even number of reuses",
                pd.DataFrame(rows),
                "k fusion runs must reuse the encoders before the time saved pays for "
                "pretraining; ∞: no time is saved per run.",
            )
        )
    if len(results.equal_compute):
        tables.append(
            comparison_table(
                results, results.equal_compute, f"Best {results.curve_key} at equal total compute"
            )
        )
    if len(results.efficiency):
        rows = [
            {
                "condition": r["condition"],
                "metric": r["metric"],
                "basis": r["basis"],
                "per minute": f"{pm(r['mean'], r['sd'], 4)}",
            }
            for r in results.efficiency.to_dict("records")
        ]
        tables.append(
            Table("Efficiency (metric per minute of compute, full pattern)", pd.DataFrame(rows))
        )
    return tables


def multimodal_tables(results: Results) -> list[Table]:
    if results.multimodal_summary.empty:
        return []
    s = results.settings
    rows = [
        {
            "condition": r["condition"],
            "metric": r["metric"],
            "quantity": r["quantity"],
            "mean ± sd": pm(r["mean"], r["sd"]),
            "CI": interval(r["ci_low"], r["ci_high"], signed=False),
        }
        for r in results.multimodal_summary.to_dict("records")
    ]
    tables = [
        Table(
            "Fusion gain (full − best unimodal) and robustness (unimodal / full)",
            pd.DataFrame(rows),
        )
    ]
    if len(results.multimodal):
        tables.append(
            comparison_table(
                results, results.multimodal, f"Fusion gain and robustness: {s.a} vs {s.b}"
            )
        )
    return tables


def many_tables(result: ManyResult, title: str) -> list[Table]:
    keys = [
        c
        for c in result.omnibus.columns
        if c not in ("k", "n_blocks", "friedman_chi2", "p_value", "critical_difference", "alpha")
    ]
    omnibus = result.omnibus.assign(
        friedman_chi2=result.omnibus["friedman_chi2"].map(lambda x: num(x, 3)),
        p_value=result.omnibus["p_value"].map(pvalue),
        critical_difference=result.omnibus["critical_difference"].map(lambda x: num(x, 3)),
    )
    ranks = result.ranks.assign(
        avg_rank=result.ranks["avg_rank"].map(lambda x: num(x, 2)),
        mean=result.ranks["mean"].map(num),
        sd=result.ranks["sd"].map(num),
    )
    pairs = result.pairwise[
        [*keys, "a", "b", "n_pairs", "delta", "p_value", "p_adjusted", "significant"]
    ]
    pairs = pairs.assign(
        delta=pairs["delta"].map(lambda x: num(x, signed=True)),
        p_value=pairs["p_value"].map(pvalue),
        p_adjusted=pairs["p_adjusted"].map(pvalue),
    )
    return [
        Table(f"{title}: Friedman test and critical difference", omnibus),
        Table(f"{title}: average ranks (1 = best)", ranks),
        Table(f"{title}: pairwise exact sign-flip tests, Holm within each group", pairs),
    ]


def efficiency_tables(results: Results) -> list[Table]:
    """The thesis's pooling-method costs: parameters, training time, test latency (per
    missing rate too, when the runs have several)."""
    runs = results.runs
    cols = {
        "metrics.params/total": "parameters",
        "metrics.params/trainable": "trainable",
        "metrics.params/fusion": "fusion parameters",
        "metrics.time/train_total_s": "train s",
        "metrics.time/test_batch_ms": "test ms / batch",
    }
    have = [c for c in cols if c in runs]
    if runs.empty or not have or "fusion" not in runs:
        return []
    keys = [
        "fusion",
        "condition",
        *(["missing"] if runs.get("missing", pd.Series()).nunique() > 1 else []),
    ]
    table = runs.groupby(keys)[have].agg(["mean", "std"])
    rows = []
    for key, row in table.iterrows():
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                **{
                    cols[c]: f"{row[(c, 'mean')]:,.0f}"
                    if "params/" in c
                    else pm(row[(c, "mean")], row[(c, "std")])
                    for c in have
                },
            }
        )
    return [
        Table(
            "Parameters, training time and test latency (mean ± sd over runs)", pd.DataFrame(rows)
        )
    ]


def thesis_tables(results: Results) -> list[Table]:
    """The thesis's Chapter 7 tables for these runs."""
    s = results.settings
    tables = []
    if len(results.curves):
        first = results.curves.sort_values("epoch").groupby("run_id").head(1)
        rows = []
        for condition, group in first.groupby("condition"):
            rows.append(
                {
                    "condition": condition,
                    "n": len(group),
                    f"epoch-1 val {s.history_metric}": pm(
                        group["value"].mean(), group["value"].std(ddof=1)
                    ),
                }
            )
        tables.append(
            Table("Table 7.1 style: first-epoch validation performance", pd.DataFrame(rows))
        )
    for metric in s.metrics:
        rows = []
        subset = results.summary[results.summary["metric"] == metric]
        keys = [c for c in results.by if c != "metric"]  # (fusion, missing,) pattern
        for key, group in subset.groupby(keys, sort=False):
            by_condition = group.set_index("condition")["mean"]
            a, b = by_condition.get(s.a), by_condition.get(s.b)
            labels = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
            rows.append(
                {
                    **labels,
                    s.a: num(a),
                    s.b: num(b),
                    "Δ%": percent((a - b) / b * 100) if a is not None and b else "–",
                }
            )
        tables.append(
            Table(f"Per-pattern {s.split} {metric} with Δ% ({s.a} vs {s.b})", pd.DataFrame(rows))
        )
    return tables
