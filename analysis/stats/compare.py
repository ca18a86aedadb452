"""Condition A vs condition B per group: estimate first, decide from adjusted intervals.

Every row carries Δ = A − B with an interval adjusted for the family (Bonferroni over the
rows) and, in an adaptive-seed design, for the looks (group-sequential repeated CIs);
the verdict reads that interval against 0 and ±ROPE:

- ``<a> better`` / ``<b> better``: the adjusted interval lies entirely beyond the ROPE
  on that side (so the difference is also significant after correction);
- ``equivalent``: the adjusted interval lies inside ±ROPE;
- ``inconclusive``: neither, with the seeds a decision would need.

The primary test is the t-test (paired on seeds, Welch otherwise), which can reach the
per-row level α/m at 5 seeds; the exact permutation test is reported beside it as a
robustness check, with a warning when the two disagree where the exact test could have
agreed. Beside the frequentist answer, a Bayesian one: the posterior probability that A
is better, equivalent or worse (a Student-t posterior on the mean difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.stats.estimates import (
    Estimate,
    is_constant,
    paired_estimate,
    posterior,
    sample_sd,
    welch_estimate,
)
from analysis.stats.exact import (
    permutation_floor,
    sign_flip_floor,
    sign_flip_p,
    studentized_permutation_p,
)
from analysis.stats.multiplicity import Correction, adjust_pvalues
from analysis.stats.power import minimum_detectable_effect, needed_seeds, seeds_text
from analysis.stats.sequential import (
    DOWN,
    INSIDE,
    UP,
    SequentialDesign,
    critical_values,
    decision_probability,
    interval_decision,
    nominal_level,
    repeated_p_value,
)

SYMMETRY_MIN_N = 8  # D'Agostino's skewness test needs 8 values
# Metric names whose smaller values are better; everything else is higher-is-better.
LOWER_IS_BETTER_SUFFIXES = ("loss", "mae", "error", "_s", "seconds")
EQUIVALENT, INCONCLUSIVE = "equivalent", "inconclusive"

COMPARE_COLUMNS = [
    "a",
    "b",
    "design",
    "test",
    "n_a",
    "n_b",
    "n_pairs",
    "n_unmatched",
    "n_averaged",
    "mean_a",
    "sd_a",
    "mean_b",
    "sd_b",
    "r_arms",
    "delta",
    "se",
    "ci_low",
    "ci_high",
    "ci_level",
    "ci_low_unadjusted",
    "ci_high_unadjusted",
    "effect_size",
    "effect_kind",
    "p_superiority",
    "ps_low",
    "ps_high",
    "p_value",
    "p_adjusted",
    "correction",
    "alpha_row",
    "critical_t",
    "p_exact",
    "exact_test",
    "p_floor",
    "exact_can_reach",
    "prob_a_better",
    "prob_equivalent",
    "prob_b_better",
    "mde",
    "seeds_needed",
    "seeds_needed_low",
    "seeds_needed_high",
    "p_decide_by_max",
    "look",
    "n_looks",
    "decided_look",
    "decided_n",
    "verdict",
    "verdict_detail",
    "warnings",
    "run_ids_a",
    "run_ids_b",
    "run_ids_left_out",
]


def higher_is_better(metric: str) -> bool:
    return not str(metric).lower().endswith(LOWER_IS_BETTER_SUFFIXES)


def better_verdict(name: str) -> str:
    return f"{name} better"


def compare_two(
    frame: pd.DataFrame,
    *,
    a: str,
    b: str,
    arm: str = "condition",
    value: str = "value",
    pair_on: str | None = "seed",
    by: Sequence[str] = ("pattern", "metric"),
    alpha: float = 0.05,
    confidence: float = 0.95,
    correction: Correction = "bonferroni",
    rope: float = 0.01,
    power: float = 0.8,
    seed: int = 0,
    design: SequentialDesign | None = None,
) -> pd.DataFrame:
    """Compare arm ``a`` with arm ``b`` in every group of ``by``; all rows form one family.

    Pairing: runs that share a ``pair_on`` value (the seed) are pairs; repeats of an
    (arm, seed) are averaged. A group is paired when at least two pairs exist and matched
    runs are at least as many as unmatched ones; runs left without a partner (or without
    a seed) are left out of that row and named in ``run_ids_left_out`` with the reason.
    Otherwise the group is compared as two independent samples (Welch).

    Decisions: each row's interval has level 1 − α/m (m analysable rows; α with
    ``correction="none"``), so all of the family's intervals hold together with
    probability ≥ 1 − α. With a ``design`` the intervals are repeated CIs over its looks,
    and a row is decided at the first look whose interval decides it. ``p_value`` is
    the t-test's p at the last look; ``p_adjusted`` is ``correction`` applied to the
    repeated p-values (Bonferroni's matches the verdict exactly).

    Raises:
        AnalysisInputError: an arm is absent from the whole frame (an arm missing from
            one group only is reported in that row's verdict).
    """
    for name in (a, b):
        if not (frame[arm] == name).any():
            present = ", ".join(sorted(map(str, frame[arm].dropna().unique()))) or "none"
            raise AnalysisInputError(
                f"no runs with {arm}={name!r} to compare; {arm} values present: {present}"
            )
    groups = list(frame.groupby(list(by), sort=True, dropna=False)) if by else [((), frame)]
    rows = []
    for key, group in groups:
        keys = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        sample = prepare(group, a=a, b=b, arm=arm, value=value, pair_on=pair_on)
        rows.append((keys, sample))
    m = sum(1 for _, s in rows if s.analysable)
    alpha_row = alpha if correction == "none" else alpha / max(1, m)
    out = []
    for keys, sample in rows:
        better = higher_is_better(keys.get("metric", ""))
        row = decide(
            sample,
            a=a,
            b=b,
            alpha_row=alpha_row,
            confidence=confidence,
            rope=rope,
            power=power,
            seed=seed,
            design=design,
            higher_better=better,
        )
        out.append({**keys, **row})
    result = pd.DataFrame(out, columns=[*by, *COMPARE_COLUMNS])
    repeated = np.array([r.get("_p_repeated", np.nan) for r in out], dtype=float)
    result["p_adjusted"] = adjust_pvalues(repeated, correction)
    result["correction"] = correction
    return result


@dataclass
class Sample:
    """One group's values, paired where possible (built by :func:`prepare`)."""

    design: str  # paired | welch | missing arm | too few runs
    xa: np.ndarray  # paired: matched, in seed order; welch: every usable run
    xb: np.ndarray
    n_a: int
    n_b: int
    n_unmatched: int = 0
    n_averaged: int = 0
    ids_a: tuple[str, ...] = ()
    ids_b: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()  # "run_id (reason)"
    detail: str = ""

    @property
    def analysable(self) -> bool:
        return self.design in ("paired", "welch")


def prepare(
    group: pd.DataFrame, *, a: str, b: str, arm: str, value: str, pair_on: str | None
) -> Sample:
    """Pair what can be paired; name every run left out and why."""
    has_ids = "run_id" in group
    ab = group[group[arm].isin([a, b])]
    left_out: list[str] = []

    def ids(rows: pd.DataFrame) -> tuple[str, ...]:
        return tuple(dict.fromkeys(map(str, rows["run_id"]))) if has_ids else ()

    def leave(rows: pd.DataFrame, why: str) -> None:
        left_out.extend(f"{r} ({why})" for r in ids(rows))

    missing_value = ab[ab[value].isna()]
    leave(missing_value, f"{value} is NaN")
    ab = ab[ab[value].notna()]
    ga, gb = ab[ab[arm] == a], ab[ab[arm] == b]
    base = {"n_a": len(ga), "n_b": len(gb)}
    if ga.empty or gb.empty:
        missing = a if ga.empty else b
        return Sample(
            "missing arm",
            np.array([]),
            np.array([]),
            **base,
            ids_a=ids(ga),
            ids_b=ids(gb),
            left_out=tuple(left_out),
            detail=f"no {missing} runs in this group",
        )
    if pair_on is not None and pair_on in ab:
        seeded = ab[ab[pair_on].notna()]
        wide = seeded.pivot_table(index=pair_on, columns=arm, values=value, aggfunc="mean")
        wide = wide.reindex(columns=[a, b]).dropna().sort_index()  # (n_pairs, 2), seed order
        matched = seeded[seeded[pair_on].isin(wide.index)]
        unmatched = len(ab) - len(matched)
        if len(wide) >= 2 and len(matched) >= unmatched:
            leave(ab[ab[pair_on].isna()], f"no {pair_on}: cannot be paired")
            leave(seeded[~seeded[pair_on].isin(wide.index)], f"no partner {pair_on}")
            return Sample(
                "paired",
                wide[a].to_numpy(dtype=float),
                wide[b].to_numpy(dtype=float),
                **base,
                n_unmatched=unmatched,
                n_averaged=len(matched) - 2 * len(wide),
                ids_a=ids(matched[matched[arm] == a]),
                ids_b=ids(matched[matched[arm] == b]),
                left_out=tuple(left_out),
            )
    xa, xb = ga[value].to_numpy(dtype=float), gb[value].to_numpy(dtype=float)
    design = "welch" if len(xa) >= 2 and len(xb) >= 2 else "too few runs"
    detail = (
        ""
        if design == "welch"
        else f"at least 2 runs (or 2 {pair_on} pairs) per arm are needed for an interval"
    )
    return Sample(
        design,
        xa,
        xb,
        **base,
        ids_a=ids(ga),
        ids_b=ids(gb),
        left_out=tuple(left_out),
        detail=detail,
    )


def decide(
    s: Sample,
    *,
    a: str,
    b: str,
    alpha_row: float,
    confidence: float,
    rope: float,
    power: float,
    seed: int,
    design: SequentialDesign | None,
    higher_better: bool,
) -> dict[str, object]:
    """Every column of one row, from its sample."""
    row: dict[str, object] = {
        "a": a,
        "b": b,
        "design": s.design,
        "n_a": s.n_a,
        "n_b": s.n_b,
        "n_pairs": 0,
        "n_unmatched": s.n_unmatched,
        "n_averaged": s.n_averaged,
        "run_ids_a": ";".join(s.ids_a),
        "run_ids_b": ";".join(s.ids_b),
        "run_ids_left_out": ";".join(s.left_out),
        "alpha_row": alpha_row,
        "verdict": INCONCLUSIVE,
        "verdict_detail": s.detail,
        "warnings": "",
    }
    if not s.analysable:
        if len(s.xa) and len(s.xb):
            row |= {
                "mean_a": float(s.xa.mean()),
                "mean_b": float(s.xb.mean()),
                "delta": float(s.xa.mean() - s.xb.mean()),
                "p_floor": 1.0,
            }
        return row
    paired = s.design == "paired"
    est = paired_estimate(s.xa, s.xb) if paired else welch_estimate(s.xa, s.xb)
    n = est.n
    looks = design.looks_until(n) if design else (n,)
    n_max = design.max if design else n
    spending = design.spending if design else "pocock"
    crits = critical_values(looks, alpha_row, spending, n_max)
    if not paired:  # Welch: the paired schedule's nominal levels, at Welch's df
        crits = tuple(float(stats.t.isf(nominal_level(c, n) / 2, est.df)) for c in crits)
    path = _decision_path(s, est, looks, crits, rope, paired)
    c = path.final_crit
    low, high = est.delta - c * est.se, est.delta + c * est.se
    t_abs = abs(est.delta) / est.se if est.se > 0 else (math.inf if est.delta else 0.0)
    p_t = float(2 * stats.t.sf(t_abs, est.df)) if est.se > 0 else float(est.delta == 0)
    unadjusted = (
        stats.t.interval(confidence, est.df, loc=est.delta, scale=est.se)
        if est.se > 0
        else (est.delta, est.delta)
    )
    if paired:
        p_rep = repeated_p_value(t_abs, looks, spending, n_max, alpha_row)
    elif design is None:
        p_rep = p_t
    else:
        p_rep = _welch_repeated(p_t, looks, spending, n_max, alpha_row)
    if paired:
        p_exact, floor = sign_flip_p(s.xa - s.xb, seed), sign_flip_floor(s.xa - s.xb)
        exact = "exact sign-flip"
    else:
        p_exact = studentized_permutation_p(s.xa, s.xb, seed)
        floor = permutation_floor(len(s.xa), len(s.xb))
        exact = "studentized permutation"
    winner = a if (est.delta > 0) == higher_better else b
    verdict = path.verdict(a, b, higher_better)
    level = float(2 * stats.t.sf(c, est.df)) if math.isfinite(c) else 0.0
    notes = _robustness(s, est, t_abs >= c, p_exact, floor, level, winner)
    row |= {
        "n_pairs": n if paired else 0,
        "test": "paired t" if paired else "Welch t",
        "mean_a": float(s.xa.mean()),
        "sd_a": sample_sd(s.xa),
        "mean_b": float(s.xb.mean()),
        "sd_b": sample_sd(s.xb),
        "r_arms": est.r,
        "delta": est.delta,
        "se": est.se,
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_level": 1 - alpha_row,
        "ci_low_unadjusted": float(unadjusted[0]),
        "ci_high_unadjusted": float(unadjusted[1]),
        "effect_size": est.effect,
        "effect_kind": "d_z" if paired else "hedges_g",
        "p_superiority": est.ps,
        "ps_low": est.ps_low,
        "ps_high": est.ps_high,
        "p_value": p_t,
        "critical_t": c,
        "p_exact": p_exact,
        "exact_test": exact,
        "p_floor": floor,
        "exact_can_reach": floor <= level,
        **posterior(est, rope, higher_better, a, b),
        "mde": minimum_detectable_effect(n, est.sd_for_power, c, rope, power, paired=paired),
        **needed_seeds(est, rope, alpha_row, power, paired=paired),
        "p_decide_by_max": (
            decision_probability(
                est.delta, est.sd_for_power, n, n_max, crits_at_max(design, alpha_row), rope
            )
            if design is not None and n < design.max and verdict == INCONCLUSIVE
            else math.nan
        ),
        "look": len(looks),
        "n_looks": len(design.looks) if design else 1,
        "decided_look": path.look,
        "decided_n": path.n,
        "verdict": verdict,
        "warnings": " ".join(notes),
        "_p_repeated": p_rep,
    }
    row["verdict_detail"] = _detail(row, verdict, design)
    return row


@dataclass
class Path:
    """Where along its looks a row was first decided (None: not yet)."""

    decision: str | None  # "a" (a − b beyond +ROPE), "b" (beyond −ROPE), "equivalent"
    look: float
    n: float
    final_crit: float

    def verdict(self, a: str, b: str, higher_better: bool) -> str:
        if self.decision is None:
            return INCONCLUSIVE
        if self.decision == EQUIVALENT:
            return EQUIVALENT
        up = self.decision == "up"  # Δ = a − b lies above +ROPE
        return better_verdict(a if up == higher_better else b)


def _decision_path(
    s: Sample,
    est: Estimate,
    looks: tuple[int, ...],
    crits: tuple[float, ...],
    rope: float,
    paired: bool,
) -> Path:
    """The first look whose interval decides the row: earlier looks use the first n_k
    pairs in seed order, as they were when that look happened."""
    stages = []
    if paired and len(looks) > 1:
        d = s.xa - s.xb
        for k, (n_k, c) in enumerate(zip(looks, crits, strict=True)):
            part = d[:n_k]
            sd = 0.0 if is_constant(part) else float(part.std(ddof=1))
            stages.append((k + 1, n_k, float(part.mean()), sd / math.sqrt(n_k), c))
    else:  # one look, or Welch (the runs' order within an arm is not a design)
        stages.append((len(looks), est.n, est.delta, est.se, crits[-1]))
    for look, n_k, delta, se, c in stages:
        decision = interval_decision(delta - c * se, delta + c * se, rope)
        if decision != 0:
            return Path(_DECISIONS[decision], look, n_k, crits[-1])
    return Path(None, math.nan, math.nan, crits[-1])


_DECISIONS = {UP: "up", DOWN: "down", INSIDE: EQUIVALENT}


def _welch_repeated(
    p_nominal: float, looks: tuple[int, ...], spending: str, n_max: int, alpha: float
) -> float:
    """Welch rows in a sequential design: the paired schedule's repeated p-value at the
    same nominal p (an approximation; the pipeline's designs are always paired)."""
    t_equiv = float(stats.t.isf(p_nominal / 2, looks[-1] - 1)) if p_nominal > 0 else math.inf
    return repeated_p_value(t_equiv, looks, spending, n_max, alpha)  # type: ignore[arg-type]


def crits_at_max(design: SequentialDesign, alpha_row: float) -> float:
    return critical_values(design.looks, alpha_row, design.spending, design.max)[-1]


def _robustness(
    s: Sample,
    est: Estimate,
    t_decides: bool,
    p_exact: float,
    floor: float,
    level: float,
    winner: str,
) -> list[str]:
    """Warnings a reader must see: the exact test disagrees where it could agree, or the
    differences look skewed (both tests assume symmetry)."""
    notes = []
    exact_decides = p_exact <= level
    if t_decides != exact_decides and floor <= level:
        notes.append(
            f"the exact test disagrees (p = {p_exact:.3g} against the look's level "
            f"{level:.3g}): check for outliers or skew before trusting the t-test"
        )
    if s.design == "paired" and est.n >= SYMMETRY_MIN_N and est.sd > 0:
        skew = stats.skewtest(s.xa - s.xb)
        if skew.pvalue < 0.05:
            notes.append(
                f"the paired differences look skewed (D'Agostino p = {skew.pvalue:.3g}); both "
                "tests assume symmetric differences"
            )
    return notes


def _detail(row: dict[str, object], verdict: str, design: SequentialDesign | None) -> str:
    n = int(row["n_pairs"] or min(int(row["n_a"]), int(row["n_b"])))
    where = f"look {row['look']} of {row['n_looks']}, n={n}" if design else f"n={n}"
    if verdict != INCONCLUSIVE:
        if design and row["decided_look"] != row["look"]:
            return f"decided at look {int(row['decided_look'])}, n={int(row['decided_n'])}; now {where}"
        return f"decided at {where}" if design else f"at n={n}"
    need, low, high = row["seeds_needed"], row["seeds_needed_low"], row["seeds_needed_high"]
    text = f"need ≈{seeds_text(need, n)} seeds (80% CI {seeds_text(low, n)}–{seeds_text(high, n)})"
    if design and math.isfinite(float(row["p_decide_by_max"])):
        text += f"; P(decided by {design.max}) ≈ {float(row['p_decide_by_max']):.2f}"
    return f"{where}; {text}"


__all__ = ["compare_two", "higher_is_better", "sign_flip_p"]
