"""The headline table: A vs B per pattern × metric, estimate first, then the tests, the
Bayesian probabilities and the verdict, with a note saying what each number means."""

from __future__ import annotations

import pandas as pd

from analysis.results import Results
from analysis.tables import Table, interval, num, percent, pm, pvalue


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
