"""Render a paired comparison as markdown, CSV and a figure; log them to an analysis run."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def markdown_table(
    result: pd.DataFrame, *, metric: str, a: str = "pretrained", b: str = "scratch"
) -> str:
    """The pretrained-vs-scratch table, one row per modality pattern."""
    header = (
        f"| pattern | n | {a} mean ± sd | {b} mean ± sd | Δ ({a} − {b}) | 95% CI | paired-t p |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.pattern} | {r.n} | {_pm(r.mean_a, r.sd_a)} | {_pm(r.mean_b, r.sd_b)} | "
        f"{_num(r.delta, signed=True)} | [{_num(r.ci_low, signed=True)}, {_num(r.ci_high, signed=True)}] | "
        f"{_p(r.p_value)} |"
        for r in result.itertuples()
    ]
    notes = [f"\nMetric: {metric}. Runs are paired by seed; Δ > 0 means {a} is better."]
    unmatched = int(result["n_unmatched"].sum()) if len(result) else 0
    if unmatched:
        notes.append(f"{unmatched} run-pattern values had no partner seed and were dropped.")
    averaged = int(result["n_averaged"].max()) if len(result) else 0
    if averaged:
        notes.append(f"{averaged} runs repeated an (arm, seed) pair and were averaged into it.")
    if len(result) and result["n"].min() < 2:
        notes.append("Fewer than 2 paired seeds: no CI or p-value can be given; run more seeds.")
    return header + "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def save_figure(
    result: pd.DataFrame, path: Path, *, metric: str, a: str = "pretrained", b: str = "scratch"
) -> Path:
    """Left: each arm's mean ± sd per pattern. Right: paired Δ with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.6 * max(len(result), 2) + 1.8))
    y = range(len(result))
    h = 0.38
    left.barh([i - h / 2 for i in y], result["mean_a"], h, xerr=result["sd_a"].fillna(0), label=a)
    left.barh([i + h / 2 for i in y], result["mean_b"], h, xerr=result["sd_b"].fillna(0), label=b)
    left.set_yticks(list(y), result["pattern"])
    left.set_xlabel(f"{metric} (mean ± sd over seeds)")
    left.invert_yaxis()
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    err_low = (result["delta"] - result["ci_low"]).fillna(0)
    err_high = (result["ci_high"] - result["delta"]).fillna(0)
    right.errorbar(result["delta"], list(y), xerr=[err_low, err_high], fmt="o", capsize=4)
    right.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    right.set_yticks(list(y), result["pattern"])
    right.invert_yaxis()
    right.set_xlabel(f"Δ {metric} ({a} − {b}), 95% CI")
    fig.suptitle(
        f"Task-specific pretraining vs scratch (n = {int(result['n'].max()) if len(result) else 0} seeds)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _num(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _pm(mean: float, sd: float) -> str:
    return f"{_num(mean)} ± {_num(sd)}" if not math.isnan(sd) else _num(mean)


def _p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"
