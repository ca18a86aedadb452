"""A sweep's sensitivity report, from its trial runs on the tracking server (no torch).

    tsp sensitivity <sweep parent run id>            # prints it and logs sweep/sensitivity/
    tsp sensitivity <id> --metric test/audio-image/accuracy --no-log --output report/

The sweep parent logs this report itself when it compares conditions (sweep=sensitivity).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from analysis.data import search_all_runs  # noqa: E402
from analysis.errors import AnalysisInputError  # noqa: E402
from analysis.figures import _color  # noqa: E402
from analysis.stats.sensitivity import Sensitivity, sensitivity, verdict  # noqa: E402
from analysis.tables import Table, interval, num, pvalue  # noqa: E402
from tsp_mlflow.tracking import schema  # noqa: E402
from tsp_mlflow.tracking.params import redact_uri  # noqa: E402

VALUES_FILE = "values.csv"
REPORT_FILE = "report.md"


@dataclass
class SensitivityReport:
    result: Sensitivity
    markdown: str
    headline: str  # the verdict sentences
    folder: Path | None


def trials_frame(
    client: MlflowClient, parent_run_id: str, metric: str = schema.BEST_VALUE
) -> pd.DataFrame:
    """One row per trial under a sweep parent: run id, condition, trial number, ``state``
    (COMPLETE, PRUNED, FAIL), ``config`` (canonical JSON of the sampled values), one column
    per parameter, and ``value`` (``metric``; NaN unless COMPLETE)."""
    try:
        parent = client.get_run(parent_run_id)
    except MlflowException:
        raise AnalysisInputError(
            f"sweep run {parent_run_id!r} does not exist in {redact_uri(client.tracking_uri)}"
        ) from None
    if parent.data.tags.get(schema.STAGE) != schema.STAGE_SWEEP:
        raise AnalysisInputError(f"run {parent_run_id} is not a sweep parent (tsp.stage=sweep)")
    runs = search_all_runs(
        client,
        [parent.info.experiment_id],
        f"tags.`{schema.PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{schema.TRIAL_STATE}` IS NOT NULL",
    )
    rows = []
    for run in runs:
        tags = run.data.tags
        values = json.loads(tags.get(schema.TRIAL_PARAMS, "{}"))
        state = tags[schema.TRIAL_STATE]
        if state == "COMPLETE" and metric not in run.data.metrics:
            raise AnalysisInputError(
                f"trial run {run.info.run_id} has no metric {metric!r}; choose one it logged, "
                f"e.g. {schema.BEST_VALUE} or test/<pattern>/<metric>"
            )
        rows.append(
            {
                "run_id": run.info.run_id,
                "condition": tags.get(schema.CONDITION) or tags.get(schema.MODALITY, "?"),
                "trial": int(tags.get(schema.TRIAL_NUMBER, -1)),
                "state": state,
                "config": json.dumps(values, sort_keys=True),
                **values,
                "value": run.data.metrics[metric] if state == "COMPLETE" else np.nan,
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values(["condition", "trial"]).reset_index(drop=True) if len(frame) else frame


NON_ADAPTIVE_SAMPLERS = ("GridSampler", "RandomSampler", "QMCSampler")


def sensitivity_report(
    parent_run_id: str,
    *,
    metric: str | None = None,
    reference: str | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    folder: Path | None = None,
    log: bool = False,
) -> SensitivityReport:
    """Fetch, compute, render; write ``folder`` (report, inputs, figures) and, with
    ``log``, log it to the sweep parent under ``sweep/sensitivity/``."""
    client = MlflowClient()
    every = trials_frame(client, parent_run_id, metric or schema.BEST_VALUE)
    if every.empty or not (every["state"] == "COMPLETE").any():
        raise AnalysisInputError(f"sweep {parent_run_id} has no completed trials yet")
    frame = every[every["state"] == "COMPLETE"].drop(columns="state")
    dropped = every[every["state"] != "COMPLETE"].groupby(["condition", "state"]).size()
    missing = sorted(set(every["condition"]) - set(frame["condition"]))
    if missing:
        raise AnalysisInputError(
            f"sweep {parent_run_id}: condition(s) {', '.join(missing)} have no completed trial"
        )
    params_logged = client.get_run(parent_run_id).data.params
    direction = params_logged.get("sweep.direction", "maximize")
    objective = metric in (None, schema.BEST_VALUE)  # the sweep's own objective
    higher = direction == "maximize" if objective else _higher(str(metric))
    frame = frame.dropna(axis=1, how="all")  # a dimension only failed trials sampled
    params = [
        c for c in frame.columns if c not in ("run_id", "condition", "trial", "config", "value")
    ]
    result = sensitivity(
        frame,
        params=params,
        higher_is_better=higher,
        reference=reference,
        confidence=confidence,
        seed=seed,
    )
    shown_metric = str(params_logged.get("sweep.metric", metric) if objective else metric)
    notes = (
        [
            f"Left out (no final value): {', '.join(f'{n} {state.lower()} ({c})' for (c, state), n in dropped.items())}. "
            "Failed or pruned configurations can make a condition look more robust than it is."
        ]
        if len(dropped)
        else []
    )
    sampler, pruner = params_logged.get("sweep.sampler", ""), params_logged.get("sweep.pruner", "")
    if not sampler.startswith(NON_ADAPTIVE_SAMPLERS) or not pruner.startswith("NopPruner"):
        notes.append(
            f"Caution: this sweep used {sampler.split('(')[0] or '?'} with "
            f"{pruner.split('(')[0] or '?'}, which choose what to measure from earlier "
            "results, so each condition is measured on a self-selected part of the "
            "space; use sweep=sensitivity (a grid, no pruning) for this question."
        )
    headline = "\n".join(verdict(r) for _, r in result.comparisons.iterrows()) or (
        "One condition only: nothing to compare."
    )
    markdown = render(
        result,
        metric=shown_metric,
        run_id=parent_run_id,
        headline=headline,
        confidence=confidence,
        notes=notes,
    )
    if log and folder is None:
        with tempfile.TemporaryDirectory(prefix="tsp-sensitivity-") as tmp:
            write(result, markdown, Path(tmp), shown_metric)
            client.log_artifacts(parent_run_id, tmp, schema.SENSITIVITY_DIR)
    elif folder is not None:
        write(result, markdown, folder, shown_metric)
        if log:
            client.log_artifacts(parent_run_id, str(folder), schema.SENSITIVITY_DIR)
    return SensitivityReport(result, markdown, headline, folder)


def render(
    result: Sensitivity,
    *,
    metric: str,
    run_id: str,
    headline: str,
    confidence: float,
    notes: list[str] = (),
) -> str:
    """The report as markdown: per-condition spread, comparisons, per-parameter effects."""
    level = f"{confidence:.0%}"
    s = result.summary
    ks = [c for c in s.columns if c.startswith("best") and c.endswith("_mean")]
    spread = pd.DataFrame(
        {
            "condition": s["condition"],
            "trials": s["n"],
            "best": s["best"].map(num),
            **{f"mean of best {c[4:-5]}": s[c].map(num) for c in ks},
            "median": s["median"].map(num),
            "SD": s["sd"].map(num),
            "IQR": s["iqr"].map(num),
            "range": s["range"].map(num),
            "mean regret": s["mean_regret"].map(num),
        }
    )
    tables = [
        Table(
            f"Spread over configurations ({metric})",
            spread,
            "Regret: how far a configuration falls below its condition's best; the mean "
            "regret is the area above the robustness curve (robustness.png). Read it "
            "with the best values: a condition that learns nothing is flat, hence "
            "'robust'.",
        )
    ]
    c = result.comparisons
    if len(c):
        compare = pd.DataFrame(
            {
                "A vs B": c["a"] + " vs " + c["b"],
                "Δ mean regret (A−B)": c["delta_regret"].map(lambda x: num(x, signed=True)),
                f"{level} CI": [
                    interval(lo, hi) for lo, hi in zip(c["ci_low"], c["ci_high"], strict=True)
                ],
                "test": c["test"],
                "p": c["p_value"].map(pvalue),
                "p (adjusted)": c["p_adjusted"].map(pvalue),
                "Δ IQR (A−B)": c["delta_iqr"].map(lambda x: num(x, signed=True)),
                f"IQR {level} CI": [
                    interval(lo, hi)
                    for lo, hi in zip(c["iqr_ci_low"], c["iqr_ci_high"], strict=True)
                ],
                "Brown-Forsythe p": c["spread_test_p"].map(pvalue),
            }
        )
        tables.append(
            Table(
                "Is one condition less sensitive?",
                compare,
                "Negative Δ: A's configurations stay closer to A's best than B's to B's. "
                "Holm-corrected over the comparisons.",
            )
        )
    e = result.effects
    if len(e):
        effects = pd.DataFrame(
            {
                "parameter": e["param"],
                "condition": e["condition"],
                "measure": e["kind"],
                "effect": e["effect"].map(num),
                "p": e["p_value"].map(pvalue),
            }
        )
        tables.append(
            Table(
                "How the metric moves with each hyperparameter",
                effects,
                "Few levels: the range of the level means (the other parameters "
                "averaged out). Continuous: Spearman's rho.",
            )
        )
    lv = result.levels
    if len(lv):
        wide = lv.pivot_table(
            index=["param", "level"], columns="condition", values="mean"
        ).reset_index()
        wide = wide.rename(columns={"param": "parameter"})
        for column in wide.columns[2:]:
            wide[column] = wide[column].map(num)
        wide["level"] = wide["level"].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
        tables.append(Table("Mean value per level", wide))
    lines = [f"# Hyperparameter sensitivity (sweep run {run_id})", ""]
    lines += headline.splitlines()
    lines += ["", *[f"> {note}" for note in notes]] if notes else []
    lines.append("")
    lines += [t.markdown() for t in tables]
    return "\n".join(lines)


def write(result: Sensitivity, markdown: str, folder: Path, metric: str = "value") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_FILE).write_text(markdown)
    result.regrets.to_csv(folder / VALUES_FILE, index=False)
    return [
        folder / REPORT_FILE,
        folder / VALUES_FILE,
        robustness_figure(result, folder / "robustness.png"),
        landscape_figure(result, folder / "landscape.png", metric),
    ]


def robustness_figure(result: Sensitivity, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (condition, group) in enumerate(result.robustness.groupby("condition", sort=False)):
        ax.step(
            group["delta"],
            group["fraction"],
            where="post",
            label=str(condition),
            color=_color(str(condition), i),
        )
    ax.set_xlabel("δ: distance below the condition's best")
    ax.set_ylabel("configurations within δ")
    ax.set_ylim(0, 1.02)
    ax.set_title(
        "Robustness to hyperparameters\n(a curve that rises sooner is more robust)", fontsize=10
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def landscape_figure(result: Sensitivity, path: Path, metric: str = "value") -> Path:
    """The metric against each parameter, per condition (level means joined by lines)."""
    params = result.params or ["trial"]
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False)
    data = result.regrets
    for ax, param in zip(axes[0], params, strict=True):
        numeric = pd.to_numeric(data[param], errors="coerce")
        for i, (condition, group) in enumerate(data.groupby("condition", sort=False)):
            color = _color(str(condition), i)
            x = numeric.loc[group.index] if numeric.notna().all() else group[param].astype(str)
            ax.scatter(x, group["value"], s=18, alpha=0.6, color=color, label=str(condition))
            means = group.assign(x=x).groupby("x")["value"].mean()
            if len(means) <= 12:
                ax.plot(means.index, means.to_numpy(), color=color, linewidth=1.5)
        if numeric.notna().all() and (numeric > 0).all() and numeric.max() / numeric.min() >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
    axes[0][0].legend()
    fig.suptitle("Metric across the search space")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _higher(metric: str) -> bool:
    from analysis.stats.compare import higher_is_better

    return higher_is_better(metric.rsplit("/", 1)[-1])
