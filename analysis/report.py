"""Render :class:`~analysis.results.Results` as tables (markdown and LaTeX) with verdicts."""

from __future__ import annotations

import pandas as pd

from analysis.results import Results
from analysis.stats.many import ManyResult
from analysis.tables import Table, count, interval, num, percent, pm, pvalue, seconds


def comparison_table(results: Results, table: pd.DataFrame | None = None, title: str = "") -> Table:
    """The headline: one row per pattern × metric, estimate first, then tests, then verdict."""
    s = results.settings
    table = results.comparison if table is None else table
    extra = (
        "quantity",
        "basis",
        "epoch",
        "condition",
        "dataset",
        "fusion",
        "missing",
        "gradient",
        "imputation",
    )
    keys = [c for c in table.columns if c in results.by or c in extra]
    # Tables that compare other arms (fusion methods, missing rates) name them in a and b.
    a = str(table["a"].iloc[0]) if "a" in table and len(table) else s.a
    b = str(table["b"].iloc[0]) if "b" in table and len(table) else s.b
    rows = []
    for r in table.to_dict("records"):
        kind = "d_z" if r["effect_kind"] == "d_z" else "g"
        rows.append(
            {
                **{k: r[k] for k in keys},
                "n": r["n_pairs"] if r["design"] == "paired" else f"{r['n_a']}+{r['n_b']}",
                f"{a} mean ± sd": pm(r["mean_a"], r["sd_a"]),
                f"{b} mean ± sd": pm(r["mean_b"], r["sd_b"]),
                "Δ [adjusted CI]": f"{num(r['delta'], signed=True)} {interval(r['ci_low'], r['ci_high'])}",
                "Δ%": percent(r["delta"] / r["mean_b"] * 100)
                if pd.notna(r["mean_b"]) and r["mean_b"]
                else "–",
                "effect": f"{kind} = {num(r['effect_size'], 2, signed=True)}"
                if pd.notna(r["effect_kind"])
                else "–",
                "p t": pvalue(r["p_value"]),
                f"p {r['correction']}": pvalue(r["p_adjusted"]),
                "p exact (floor)": f"{pvalue(r['p_exact'])} ({pvalue(r['p_floor'])})",
                f"P({a} better / ≈ / {b} better)": _posterior(r),
                "MDE": num(r["mde"], 3),
                "verdict": verdict_text(r),
            }
        )
    return Table(
        title or f"{s.a} vs {s.b} per pattern ({s.split} split)",
        pd.DataFrame(rows),
        comparison_note(results, table, a, b),
    )


def verdict_text(r: dict[str, object]) -> str:
    """The verdict with what the reader needs next to it: where it was decided, or the
    seeds a decision would need."""
    detail = str(r.get("verdict_detail") or "")
    return f"{r['verdict']} ({detail})" if detail else str(r["verdict"])


def _posterior(r: dict[str, object]) -> str:
    if pd.isna(r.get("prob_a_better")):
        return "–"
    return " / ".join(
        f"{float(r[k]):.2f}" for k in ("prob_a_better", "prob_equivalent", "prob_b_better")
    )


def comparison_note(results: Results, table: pd.DataFrame, a: str, b: str) -> str:
    """What the table's numbers mean: the design, the intervals' level, the tests."""
    s = results.settings
    if not len(table):
        return ""
    design = ", ".join(sorted(table["design"].dropna().unique()))
    analysable = table[table["design"].isin(["paired", "welch"])]
    m = len(analysable)
    level = float(analysable["ci_level"].iloc[0]) if m else 1 - s.alpha
    parts = [
        f"Δ = {a} − {b}. Design: {design} (paired by {s.pair_on} where seeds match, Welch "
        "otherwise).",
        f"Adjusted CI: the t interval at level {level:.4g} per row"
        + (
            f" (Bonferroni over the {m} rows, so all hold together with {1 - s.alpha:.0%})"
            if s.correction != "none" and m > 1
            else ""
        )
        + (f", as repeated CIs of a {results.design.describe()}" if results.design else "")
        + ".",
        f"Verdict: '{a} better' / '{b} better' when that interval lies beyond ±{s.rope:g} "
        "(ROPE), 'equivalent' when inside it, else 'inconclusive'.",
        f"p t: the t-test's own p; p {s.correction}: corrected over the family"
        + (" (repeated p-values, valid across looks)" if results.design else "")
        + "; p exact: the exact sign-flip (paired) or studentized permutation test, a "
        "robustness check, with the smallest p it can reach at this n.",
        f"P(…): the Bayesian posterior (Student-t) that {a} is better, equivalent within "
        f"±{s.rope:g}, or {b} is better. MDE: the smallest |Δ| the verdict detects with 80% "
        "power at this n. Run ids per row: tables/*.csv.",
    ]
    unreachable = analysable[~analysable["exact_can_reach"].astype(bool)] if m else analysable
    if len(unreachable):
        floor = float(unreachable["p_floor"].max())
        parts.append(
            f"At n = {int(unreachable['n_pairs'].max() or unreachable['n_a'].min())} the exact test "
            f"cannot reach the per-row level (its floor {floor:.3g}); there the verdicts rest on "
            "the t-test's assumption of normal (symmetric) differences."
        )
    averaged = int(table["n_averaged"].max())
    if averaged:
        parts.append(
            f"{averaged} runs repeated an (arm, {s.pair_on}) pair and were averaged into it."
        )
    left_out = sum(len([e for e in str(x).split(";") if e]) for x in table["run_ids_left_out"])
    if left_out:
        parts.append(f"{left_out} run(s) were left out of rows; see 'Runs left out'.")
    return " ".join(parts)


def verdict_lines(results: Results) -> list[str]:
    s = results.settings
    lines = []
    for r in results.comparison.to_dict("records"):
        label = " · ".join(str(r[c]) for c in results.by)
        lines.append(
            f"- **{label}**: {verdict_text(r)} (Δ = {num(r['delta'], signed=True)} "
            f"{interval(r['ci_low'], r['ci_high'])}, p {s.correction} = {pvalue(r['p_adjusted'])})"
        )
        if r.get("warnings"):
            lines.append(f"  - warning: {r['warnings']}")
    return lines


def warning_lines(results: Results) -> list[str]:
    """One line per warning a reader must not miss, for the console."""
    lines = []
    for r in results.comparison.to_dict("records"):
        if r.get("warnings"):
            label = " · ".join(str(r[c]) for c in results.by)
            lines.append(f"warning: {label}: {r['warnings']}")
    return lines


def left_out_lines(results: Results) -> list[str]:
    """Runs the analysis did not count, by reason, for the console and the report."""
    frame = results.left_out
    if frame.empty:
        return []
    lines = []
    for reason, group in frame.groupby("reason", sort=True):
        ids = sorted(set(group["run_id"]))
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        lines.append(f"left out: {len(ids)} run(s), {reason}: {shown}")
    return lines


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


def render(results: Results, *, title: str, inputs_line: str) -> tuple[str, str, str]:
    """(headline markdown, full markdown report, full LaTeX report)."""
    headline = comparison_table(results)
    sections: list[tuple[str, list[Table] | list[str]]] = [
        ("Verdicts", verdict_lines(results)),
        ("Comparison per pattern", [headline]),
        ("Sequential looks", looks_table(results)),
        ("Across patterns", aggregate_tables(results)),
        ("Variance decomposition", variance_tables(results)),
        ("Runs left out", left_out_tables(results)),
        ("Convergence", convergence_tables(results)),
        ("Cost", cost_tables(results)),
        ("Multimodal quantities", multimodal_tables(results)),
    ]
    if isinstance(results.conditions, ManyResult):
        sections.append(("Across conditions", many_tables(results.conditions, "conditions")))
    for heading, result, what, prefix, meaning in (
        ("Across fusion methods", results.fusions, "fusion methods", "", ""),
        (
            "Across missing rates",
            results.missing_rates,
            "missing rates",
            "missing ",
            "what losing more modalities costs",
        ),
        (
            "Gradient strategies: joint vs uniform vs MMPareto",
            results.gradients,
            "gradient strategies",
            "",
            "the method minus its baseline",
        ),
        (
            "Missing embeddings: predicted (VICReg) vs the fusion's rule (zero-fill)",
            results.imputations,
            "imputations",
            "",
            "predicted minus zero-filled",
        ),
        (
            "Pretraining objective: contrastive vs supervised",
            results.objectives,
            "pretraining objectives",
            "",
            "contrastive minus supervised pretraining",
        ),
    ):
        if isinstance(result, ManyResult):
            sections.append((heading, many_tables(result, what)))
        elif isinstance(result, pd.DataFrame) and len(result):
            a, b = result["a"].iloc[0], result["b"].iloc[0]
            label = f"{prefix}{a} vs {b}" + (f" (Δ = {a} − {b}: {meaning})" if meaning else "")
            sections.append((heading, [comparison_table(results, result, label)]))
    sections.append(("Efficiency per fusion method", efficiency_tables(results)))
    if len(results.probes):
        sections.append(
            (
                "Representations: linear probes on frozen test embeddings",
                [comparison_table(results, results.probes, "linear probe")],
            )
        )
    sections.append(("Thesis-style tables", thesis_tables(results)))

    intro = [f"# {title}", "", inputs_line, ""]
    if results.design:
        intro += [
            f"Procedure: {results.design.describe()}; every interval below is a "
            "repeated confidence interval, valid at whichever look the study stopped.",
            "",
        ]
    intro += [f"Note: {n}" for n in results.notes]
    md, tex = list(intro), [_latex_preamble(title)]
    for name, items in sections:
        if not items:
            continue
        md += [f"## {name}", ""]
        tex.append(f"\\section*{{{name}}}")
        for item in items:
            if isinstance(item, Table):
                md.append(item.markdown())
                tex.append(item.latex())
            else:
                md.append(item)
        md.append("")
    tex.append("\\end{document}\n")
    headline_md = headline.markdown().split("\n", 2)[2]  # without the "###" title
    return headline_md, "\n".join(md), "\n".join(tex)


def _latex_preamble(title: str) -> str:
    return (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1.5cm,landscape]{geometry}\n"
        f"\\begin{{document}}\n\\section*{{{title}}}\n"
    )
