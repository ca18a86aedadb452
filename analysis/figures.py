"""PNG figures of an analysis (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.results import Results  # noqa: E402
from analysis.stats.many import ManyResult  # noqa: E402

COLORS = {"pretrained": "tab:blue", "scratch": "tab:orange"}


def _color(name: str, index: int) -> str:
    return COLORS.get(name, f"C{index + 2}")


def save_all(results: Results, folder: Path) -> list[Path]:
    """Every figure the results support, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = [forest(results, folder / "forest.png")]
    if results.bands is not None:
        saved.append(mean_curves_figure(results, folder / "learning_curves.png"))
    if results.survival:
        saved.append(time_to_threshold(results, folder / "time_to_threshold.png"))
    saved.append(cost_breakdown(results, folder / "cost.png"))
    if len(results.curves):
        saved.append(value_vs_compute(results, folder / "value_vs_compute.png"))
    if isinstance(results.conditions, ManyResult):
        saved.append(critical_difference(results.conditions, folder / "cd_conditions.png"))
    if isinstance(results.fusions, ManyResult):
        saved.append(critical_difference(results.fusions, folder / "cd_fusions.png"))
    for name in ("missing_rates", "gradients", "imputations", "objectives"):
        many = getattr(results, name)
        if isinstance(many, ManyResult):
            saved.append(critical_difference(many, folder / f"cd_{name}.png"))
    return saved


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def forest(results: Results, path: Path) -> Path:
    """:func:`forest_figure`, saved to ``path``."""
    return _save(forest_figure(results), path)


def forest_figure(results: Results) -> plt.Figure:
    """Δ (a − b) with its CI per pattern and metric; filled when significant after
    correction; the grey band is the ROPE. A pipeline run logs it as its headline."""
    s, table = results.settings, results.comparison
    labels = [" · ".join(str(r[c]) for c in results.by) for _, r in table.iterrows()]
    fig, ax = plt.subplots(figsize=(8, 0.42 * max(len(table), 3) + 1.4))
    y = np.arange(len(table))
    if s.rope > 0:
        ax.axvspan(-s.rope, s.rope, color="0.9", label=f"ROPE ±{s.rope:g}")
    ax.axvline(0.0, color="0.4", linestyle="--", linewidth=1)
    for i, r in enumerate(table.itertuples()):
        significant = pd.notna(r.p_adjusted) and r.p_adjusted < s.alpha
        if pd.notna(r.ci_low):
            ax.plot([r.ci_low, r.ci_high], [i, i], color="tab:blue", linewidth=2)
        ax.plot(
            r.delta,
            i,
            "o",
            color="tab:blue",
            markerfacecolor="tab:blue" if significant else "white",
        )
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(
        f"Δ ({s.a} − {s.b}), {s.confidence:.0%} CI; filled = {s.correction}-adjusted p < {s.alpha:g}"
    )
    n = int(table["n_pairs"].max()) if len(table) else 0
    ax.set_title(f"{s.a} vs {s.b} on {s.split} (n = {n} seed pairs)")
    if s.rope > 0:
        ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    return fig


def mean_curves_figure(results: Results, path: Path) -> Path:
    """Mean validation curve per arm with its CI band; * marks epochs whose difference is
    significant after correction over epochs."""
    s, bands = results.settings, results.bands
    assert bands is not None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, arm) in enumerate(bands.bands.groupby("condition")):
        color = _color(str(name), i)
        ax.plot(arm["epoch"], arm["mean"], marker="o", markersize=3, color=color, label=str(name))
        ax.fill_between(
            arm["epoch"], arm["ci_low"], arm["ci_high"], color=color, alpha=0.2, linewidth=0
        )
    significant = bands.differences[bands.differences["significant"]]
    top = (
        bands.bands["ci_high"].max()
        if bands.bands["ci_high"].notna().any()
        else bands.bands["mean"].max()
    )
    for epoch in significant["epoch"]:
        ax.annotate("*", (epoch, top), ha="center", fontsize=14)
    if np.isfinite(results.threshold):
        ax.axhline(results.threshold, color="0.5", linestyle=":", linewidth=1, label="threshold")
    ax.set_xlabel("epoch")
    ax.set_ylabel(results.curve_key)
    ax.set_title(f"Learning curves, {s.confidence:.0%} CI bands (* = significant epoch)")
    ax.legend(frameon=False)
    return _save(fig, path)


def time_to_threshold(results: Results, path: Path) -> Path:
    """Kaplan–Meier: fraction of runs not yet at the threshold, in epochs and seconds."""
    fig, axes = plt.subplots(1, len(results.survival), figsize=(11, 4))
    for ax, (duration, comparison) in zip(
        np.atleast_1d(axes), results.survival.items(), strict=True
    ):
        for i, (name, arm) in enumerate(comparison.curves.groupby("condition")):
            color = _color(str(name), i)
            times = np.concatenate([[0.0], arm["time"].to_numpy()])
            surv = np.concatenate([[1.0], arm["survival"].to_numpy()])
            ax.step(times, surv, where="post", color=color, label=str(name))
            low = np.concatenate([[1.0], arm["ci_low"].to_numpy()])
            high = np.concatenate([[1.0], arm["ci_high"].to_numpy()])
            ax.fill_between(times, low, high, step="post", color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel(duration)
        ax.set_ylabel("P(threshold not yet reached)")
        ax.set_ylim(-0.02, 1.02)
        p = comparison.p_value
        ax.set_title(
            f"log-rank p = {p:.3g}" if np.isfinite(p) else comparison.note or "log-rank: –"
        )
        ax.legend(frameon=False)
    fig.suptitle(
        f"Time to {results.curve_key} ≥ {results.threshold:.4g} (censored runs never reached it)"
    )
    return _save(fig, path)


def cost_breakdown(results: Results, path: Path) -> Path:
    """Mean seconds per fusion run: own training, plus pretraining per modality, fully
    counted (solid) and amortised over its reuses (hatched), as in the thesis's Fig. 7.3."""
    cost, lineage = results.cost, results.lineage
    conditions = sorted(cost["condition"].dropna().unique())
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.arange(len(conditions))
    width = 0.38
    modalities = sorted(lineage["modality"].unique()) if len(lineage) else []
    merged = (
        lineage.merge(cost[["run_id", "condition", "reuses"]], on="run_id")
        if len(lineage)
        else None
    )
    for offset, basis in ((-width / 2, "full"), (width / 2, "amortised")):
        own = cost.groupby("condition")["own_s"].mean().reindex(conditions).fillna(0)
        bottom = own.to_numpy().copy()
        ax.bar(
            x + offset,
            own,
            width,
            color="0.6",
            label="fusion training" if basis == "full" else None,
            hatch="//" if basis == "amortised" else None,
            edgecolor="white",
        )
        for j, m in enumerate(modalities):
            rows = merged[merged["modality"] == m]
            share = (
                rows["pretrain_s"]
                if basis == "full"
                else rows["pretrain_s"] / rows["reuses"].clip(lower=1)
            )
            per_run = (
                (share.groupby(rows["condition"]).sum() / cost.groupby("condition").size())
                .reindex(conditions)
                .fillna(0)
            )
            ax.bar(
                x + offset,
                per_run,
                width,
                bottom=bottom,
                color=f"C{j}",
                edgecolor="white",
                hatch="//" if basis == "amortised" else None,
                label=f"pretrain {m}" if basis == "full" else None,
            )
            bottom += per_run.to_numpy()
    ax.set_xticks(x, [f"{c}\n(full | amortised)" for c in conditions])
    ax.set_ylabel("seconds per fusion run")
    ax.set_title("Compute per fusion run, pretraining included")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def value_vs_compute(results: Results, path: Path) -> Path:
    """Validation value against total compute (pretraining fully counted): one line per
    run, so equal-compute comparisons can be read off vertically."""
    curves, cost = results.curves, results.cost.set_index("run_id")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, arm) in enumerate(curves.groupby("condition")):
        color = _color(str(name), i)
        for j, (run_id, run) in enumerate(arm.groupby("run_id")):
            offset = float(cost.at[run_id, "pretrain_s"]) if run_id in cost.index else 0.0
            ax.plot(
                run["seconds"] + offset,
                run["value"],
                color=color,
                alpha=0.6,
                linewidth=1,
                marker=".",
                label=str(name) if j == 0 else None,
            )
    ax.set_xlabel("total compute, pretraining fully counted (s)")
    ax.set_ylabel(results.curve_key)
    ax.set_title("Validation value vs total compute")
    ax.legend(frameon=False)
    return _save(fig, path)


def critical_difference(result: ManyResult, path: Path) -> Path:
    """Average ranks (1 = best) with the Nemenyi critical difference; bars join
    conditions that no Holm-adjusted pairwise test separates. One panel per group."""
    groups = result.omnibus.to_dict("records")
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.6 * len(groups) + 0.6), squeeze=False)
    key_columns = [
        c
        for c in result.omnibus.columns
        if c not in ("k", "n_blocks", "friedman_chi2", "p_value", "critical_difference", "alpha")
    ]
    arm = [c for c in result.ranks.columns if c not in (*key_columns, "avg_rank", "mean", "sd")][0]
    for ax, group in zip(axes[:, 0], groups, strict=True):
        match = (
            np.logical_and.reduce([result.ranks[c] == group[c] for c in key_columns])
            if key_columns
            else slice(None)
        )
        ranks = result.ranks[match].sort_values("avg_rank")
        k = int(group["k"])
        ax.set_xlim(0.5, k + 0.5)
        ax.set_ylim(-1.5, 1.2)
        ax.axhline(0, color="black", linewidth=1)
        for i, r in enumerate(ranks.itertuples()):
            ax.plot(r.avg_rank, 0, "o", color="black")
            ax.annotate(
                str(getattr(r, arm)),
                (r.avg_rank, 0.25 if i % 2 else -0.45),
                ha="center",
                fontsize=8,
            )
        cd = group["critical_difference"]
        ax.plot([1, 1 + cd], [0.9, 0.9], color="tab:red", linewidth=2)
        ax.annotate(f"CD = {cd:.2f}", (1 + cd / 2, 1.0), ha="center", fontsize=8, color="tab:red")
        cliques = result.cliques
        if key_columns:
            cliques = cliques[np.logical_and.reduce([cliques[c] == group[c] for c in key_columns])]
        for level, members in enumerate(cliques["members"]):
            pos = ranks.set_index(arm).loc[members.split(","), "avg_rank"]
            ax.plot(
                [pos.min(), pos.max()], [-0.9 - 0.15 * level] * 2, color="tab:blue", linewidth=3
            )
        title = " · ".join(str(group[c]) for c in key_columns)
        ax.set_title(
            f"{title}: Friedman p = {group['p_value']:.3g} (average rank, 1 = best)", fontsize=9
        )
        ax.set_yticks([])
    return _save(fig, path)


def representations(embeddings: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """Test embeddings of each encoder, pretrained vs scratch, in 2-D: PCA and t-SNE.

    Rows are modalities; columns are (arm, method). Points are coloured by the target
    (class, first positive label, or sentiment score). At most 1500 points, drawn with a
    fixed seed, so the figure is reproducible.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    arms = list(embeddings)
    modalities = [k for k in embeddings[arms[0]] if k != "targets"]
    fig, axes = plt.subplots(
        len(modalities),
        2 * len(arms),
        squeeze=False,
        figsize=(3.2 * 2 * len(arms), 3.0 * len(modalities)),
    )
    rng = np.random.default_rng(0)
    for col, (arm, method) in enumerate((a, m) for m in ("PCA", "t-SNE") for a in arms):
        data = embeddings[arm]
        targets = data["targets"]
        colour = targets.argmax(axis=1) if targets.ndim == 2 else targets
        keep = np.sort(rng.permutation(len(targets))[:1500])
        for row, modality in enumerate(modalities):
            x = data[modality][keep]
            if method == "PCA":
                xy = PCA(n_components=2, random_state=0).fit_transform(x)
            else:
                perplexity = max(2.0, min(30.0, (len(x) - 1) / 3))
                xy = TSNE(
                    n_components=2, perplexity=perplexity, random_state=0, init="pca"
                ).fit_transform(x)
            ax = axes[row][col]
            ax.scatter(xy[:, 0], xy[:, 1], c=colour[keep], s=5, cmap="tab10", alpha=0.8)
            ax.set_title(f"{modality}: {arm}\n{method}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)
