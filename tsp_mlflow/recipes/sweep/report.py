"""The sweep's record on its parent run: the best trial per arm as it changes, and at the
end the trials table, param importances, optimisation history and sensitivity report."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import optuna
from hydra.utils import instantiate
from mlflow import MlflowClient

from tsp_mlflow.recipes.sweep.study import (
    OVERRIDES_ATTR,
    RUN_ATTR,
    SURPLUS_ATTR,
    best_trial,
    counts,
    finished_count,
)
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.session import MAX_TAG_LENGTH

if TYPE_CHECKING:
    from tsp_mlflow.recipes.sweep.recipe import SweepRecipe


def log_best(
    client: MlflowClient, parent: str, arm: str, best: optuna.trial.FrozenTrial, finished: int
) -> None:
    """The best trial so far on the parent: tags (they change as the study grows) and a
    metric with the number of finished trials as its step."""
    tags = {
        schema.sweep_best_tag(arm, "trial"): str(best.number),
        schema.sweep_best_tag(arm, "value"): f"{best.value:.6g}",
        schema.sweep_best_tag(arm, "run_id"): str(best.user_attrs.get(RUN_ATTR, "")),
        **{schema.sweep_best_tag(arm, k): str(v) for k, v in best.params.items()},
    }
    client.log_batch(
        parent,
        metrics=[
            mlflow.entities.Metric(
                schema.sweep_best_metric(arm), float(best.value), int(time.time() * 1000), finished
            )
        ],
        tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()],
    )


def summarize(
    client: MlflowClient, parent: str, recipe: SweepRecipe, studies: dict[str, optuna.Study]
) -> None:
    """The parent's record of a whole sweep: per arm the best trial (tags, metric,
    ``best.json`` with the overrides that reproduce it), the trials table, the
    param-importance table and figure, the optimisation history; the sensitivity report
    when the sweep compares conditions; and a description shown in the MLflow UI."""
    lines = [
        f"**Optuna sweep `{recipe.name}`** on {recipe.dataset}: {recipe.direction} "
        f"{recipe.objective_key}.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="tsp-sweep-") as tmp:
        for arm, study in studies.items():
            folder = Path(tmp) / arm
            folder.mkdir()
            trials = [
                t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)
            ]
            states = {
                s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")
            }
            client.log_batch(
                parent,
                metrics=[
                    mlflow.entities.Metric(
                        f"sweep/{arm}/trials_{s.lower()}", n, int(time.time() * 1000), len(trials)
                    )
                    for s, n in states.items()
                ],
            )
            frame = study.trials_dataframe()
            frame[frame["number"].isin([t.number for t in trials])].to_csv(
                folder / "trials.csv", index=False
            )
            best = best_trial(study, trials)
            counted = ", ".join(f"{n} {s.lower()}" for s, n in states.items())
            if best is None:
                lines.append(f"- **{arm}**: no complete trial ({counted}).")
                continue
            log_best(client, parent, arm, best, finished_count([t for t in trials if counts(t)]))
            document = {
                "trial": best.number,
                "value": best.value,
                "params": best.params,
                "run_id": best.user_attrs.get(RUN_ATTR),
                "overrides": best.user_attrs.get(OVERRIDES_ATTR, []),
            }
            (folder / "best.json").write_text(json.dumps(document, indent=2, default=str))
            importance = write_importance(study, recipe, folder)
            shown = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
            lines.append(
                f"- **{arm}**: best {best.value:.4g} (trial {best.number}: {shown}); "
                f"{counted}. {importance}"
            )
        if recipe.stage == "multimodal" and len(studies) >= 2:
            from analysis.errors import AnalysisInputError
            from analysis.sensitivity import sensitivity_report

            try:
                report = sensitivity_report(parent, folder=Path(tmp) / "sensitivity")
                lines += ["", report.headline]
            except AnalysisInputError as err:  # e.g. a condition without complete trials
                lines += ["", f"No sensitivity report: {err}"]
        client.log_artifacts(parent, tmp, schema.SWEEP_DIR)
    client.set_tag(parent, "mlflow.note.content", "\n".join(lines)[:MAX_TAG_LENGTH])


def write_importance(study: optuna.Study, recipe: SweepRecipe, folder: Path) -> str:
    """``importance.csv``/``.md``/``.png`` and ``history.png``; a sentence for the summary."""
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varied = [
        k for k in recipe.space.distributions if len({repr(t.params.get(k)) for t in complete}) > 1
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        target = recipe.objective_key
        figure = optuna_plots.plot_optimization_history(study, target_name=target).figure
        figure.savefig(folder / "history.png", dpi=120, bbox_inches="tight")
        values = {t.value for t in complete}
        if len(complete) < 2 or not varied or len(values) < 2:
            note = (
                f"No param importance: it needs complete trials that differ in both their "
                f"parameters and their value ({len(complete)} complete, {len(values)} distinct "
                "values)."
            )
            (folder / "importance.md").write_text(note + "\n")
            return note
        evaluator = instantiate(recipe.cfg.sweep.importance)
        try:
            scores = optuna.importance.get_param_importances(
                study, evaluator=evaluator, params=varied
            )
        except (RuntimeError, ValueError) as err:  # an evaluator that cannot fit these trials
            note = f"No param importance: {type(evaluator).__name__} failed ({err})."
            (folder / "importance.md").write_text(note + "\n")
            return note
        lines = ["| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in scores.items()]
        (folder / "importance.csv").write_text(
            "parameter,importance\n" + "".join(f"{k},{v}\n" for k, v in scores.items())
        )
        (folder / "importance.md").write_text(
            f"Param importance ({type(evaluator).__name__}, {len(complete)} complete trials)\n\n"
            + "\n".join(lines)
            + "\n"
        )
        axes = optuna_plots.plot_param_importances(
            study, evaluator=evaluator, params=varied, target_name=target
        )
        axes.figure.savefig(folder / "importance.png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close("all")
    top = next(iter(scores))
    return f"Most important: {top} ({scores[top]:.2f})."


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
