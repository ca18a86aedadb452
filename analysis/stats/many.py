"""k ≥ 3 conditions (fusion methods, encoder configurations) compared over shared seeds."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.stats.compare import higher_is_better, sign_flip_p
from analysis.stats.multiplicity import Correction, adjust_pvalues


@dataclass
class ManyResult:
    """``omnibus``: one Friedman test per group. ``ranks``: average rank per condition
    (1 = best) with the Nemenyi critical difference. ``pairwise``: every pair, with
    Holm-adjusted exact sign-flip p-values. ``cliques``: per group, runs of conditions
    adjacent in rank that no adjusted test separates (the bars of a CD diagram)."""

    omnibus: pd.DataFrame
    ranks: pd.DataFrame
    pairwise: pd.DataFrame
    cliques: pd.DataFrame


def compare_many(
    frame: pd.DataFrame,
    *,
    arm: str = "condition",
    value: str = "value",
    block: str = "seed",
    by: Sequence[str] = ("pattern", "metric"),
    alpha: float = 0.05,
    correction: Correction = "holm",
) -> ManyResult:
    """Friedman omnibus, average ranks, critical difference and Holm-corrected pairs.

    Only blocks (seeds) in which every condition has a value are used; repeats of a
    (condition, seed) are averaged. The pairwise family is the k(k−1)/2 pairs of a group.

    Raises:
        AnalysisInputError: fewer than 3 conditions, or fewer than 2 complete blocks.
    """
    arms = sorted(map(str, frame[arm].dropna().unique()))
    if len(arms) < 3:
        raise AnalysisInputError(
            f"compare_many needs at least 3 values of {arm!r}, found {len(arms)} "
            f"({', '.join(arms) or 'none'}); use compare_two for two"
        )
    omnibus, ranks, pairwise, cliques = [], [], [], []
    for key, group in frame.groupby(list(by), sort=True, dropna=False):
        keys = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        wide = group.pivot_table(index=block, columns=arm, values=value, aggfunc="mean")
        wide = wide.reindex(columns=arms).dropna()  # (n_blocks, k) complete blocks only
        n, k = wide.shape
        if n < 2:
            raise AnalysisInputError(
                f"{keys}: only {n} {block} value(s) have a run for every {arm}; "
                f"compare_many needs at least 2 complete {block}s"
            )
        better = higher_is_better(keys.get("metric", ""))
        # Rank 1 is best: rank the negated values when higher is better.
        rank = (-wide if better else wide).rank(axis=1, method="average")  # (n, k)
        avg = rank.mean(axis=0)
        chi2, p = _friedman(wide)
        q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
        cd = float(q * math.sqrt(k * (k + 1) / (6 * n)))
        omnibus.append(
            {
                **keys,
                "k": k,
                "n_blocks": n,
                "friedman_chi2": chi2,
                "p_value": p,
                "critical_difference": cd,
                "alpha": alpha,
            }
        )
        for c in arms:
            ranks.append(
                {
                    **keys,
                    arm: c,
                    "avg_rank": float(avg[c]),
                    "mean": float(wide[c].mean()),
                    "sd": float(wide[c].std(ddof=1)),
                }
            )
        pairs = []
        for x, y in itertools.combinations(arms, 2):
            d = (wide[x] - wide[y]).to_numpy()
            sd = float(d.std(ddof=1))
            pairs.append(
                {
                    **keys,
                    "a": x,
                    "b": y,
                    "n_pairs": n,
                    "delta": float(d.mean()),
                    "effect_size": float(d.mean() / sd) if sd > 0 else _signed_inf(d.mean()),
                    "p_value": sign_flip_p(d),
                    "rank_gap": float(avg[x] - avg[y]),
                }
            )
        adjusted = adjust_pvalues([r["p_value"] for r in pairs], correction)
        for r, p_adj in zip(pairs, adjusted, strict=True):
            r["p_adjusted"] = float(p_adj)
            r["significant"] = bool(p_adj < alpha)
            r["correction"] = correction
        pairwise.extend(pairs)
        for members in _cliques(avg, pairs):
            cliques.append({**keys, "members": ",".join(members)})
    return ManyResult(
        omnibus=pd.DataFrame(omnibus),
        ranks=pd.DataFrame(ranks),
        pairwise=pd.DataFrame(pairwise),
        cliques=pd.DataFrame(cliques, columns=[*by, "members"]),
    )


def _friedman(wide: pd.DataFrame) -> tuple[float, float]:
    if (wide.nunique(axis=1) == 1).all():  # every block ties every condition: no evidence
        return 0.0, 1.0
    result = stats.friedmanchisquare(*(wide[c].to_numpy() for c in wide.columns))
    return float(result.statistic), float(result.pvalue)


def _cliques(avg: pd.Series, pairs: list[dict[str, object]]) -> list[list[str]]:
    """Maximal runs of rank-adjacent conditions with no significant pair inside."""
    order = list(avg.sort_values().index)
    separated = {frozenset((p["a"], p["b"])) for p in pairs if p["significant"]}
    found: list[list[str]] = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and all(
            frozenset((order[i], order[end + 1])) not in separated for i in range(start, end + 1)
        ):
            end += 1
        members = order[start : end + 1]
        if len(members) > 1 and not any(set(members) <= set(f) for f in found):
            found.append(members)
    return found


def _signed_inf(x: float) -> float:
    return 0.0 if x == 0 else math.copysign(math.inf, x)
