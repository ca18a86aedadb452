"""Render :class:`~analysis.results.Results` as tables (markdown and LaTeX) with verdicts."""

from __future__ import annotations

import pandas as pd

from analysis.comparison_table import comparison_table, verdict_text
from analysis.report_sections import (
    aggregate_tables,
    convergence_tables,
    cost_tables,
    efficiency_tables,
    left_out_tables,
    looks_table,
    many_tables,
    multimodal_tables,
    thesis_tables,
    variance_tables,
)
from analysis.results import Results
from analysis.stats.many import ManyResult
from analysis.tables import Table, interval, num, pvalue


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
