"""One trial of a sweep: a nested MLflow run trained by a stage recipe, reported to Optuna
epoch by epoch (so the pruner can stop it), and its outcome recorded on both sides."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import optuna
from mlflow import MlflowClient

from tsp_mlflow.errors import RunStopped, UserInputError
from tsp_mlflow.recipes.pretrain import PretrainRecipe
from tsp_mlflow.recipes.sweep.report import log_best
from tsp_mlflow.recipes.sweep.study import (
    FAILED_ATTR,
    OVERRIDES_ATTR,
    RUN_ATTR,
    SURPLUS_ATTR,
    WORKER,
    best_trial,
    counted_trials,
    finished_count,
    position,
)
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.session import MAX_TAG_LENGTH
from tsp_mlflow.training.loop import EpochMetrics

if TYPE_CHECKING:
    from tsp_mlflow.recipes.sweep.recipe import Arm, SweepRecipe


class TrialFailed(Exception):
    """A trial's training raised; the trial is FAIL in Optuna, FAILED in MLflow, and the
    sweep goes on (one diverging configuration must not end a long sweep)."""


class PruningReport:
    """``on_epoch_end`` for a trial: report the monitored validation value to Optuna, and
    stop the run (KILLED, ``tsp.stopped``) when the pruner says so."""

    def __init__(self, trial: optuna.Trial, pattern: str, metric: str) -> None:
        self.trial, self.pattern, self.metric = trial, pattern, metric
        self.epoch = 0

    def __call__(self, epoch: int, metrics: EpochMetrics, seconds: float) -> None:
        self.epoch = epoch
        value = metrics["val"][self.pattern][self.metric]
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            key = schema.metric_key("val", self.pattern, self.metric)
            raise RunStopped(
                f"pruned by the sweep's pruner after epoch {epoch}: {key} = {value:.4g}"
            )


class TrialRunner:
    """Optuna's objective and after-trial callback for one arm's study of a sweep."""

    def __init__(
        self,
        recipe: SweepRecipe,
        arm: Arm,
        parent: str,
        experiment_id: str,
        pretrain_runs: dict[str, str],
    ) -> None:
        self.recipe, self.arm, self.parent = recipe, arm, parent
        self.experiment_id, self.pretrain_runs = experiment_id, pretrain_runs
        self.client = MlflowClient()

    def optimize(self, study: optuna.Study) -> None:
        """Run trials until the study has ``n_trials`` counted ones (across all workers)."""
        if len(counted_trials(study)) >= self.recipe.n_trials:
            print(f"study {study.study_name}: {self.recipe.n_trials} trials already", flush=True)
            return
        study.optimize(self.objective, callbacks=[self.after_trial], catch=(TrialFailed,))

    def objective(self, trial: optuna.Trial) -> float:
        """Train the trial's run; its objective is the run's best monitored value."""
        recipe, client = self.recipe, self.client
        if position(trial) >= recipe.n_trials:  # another worker asked for the last one first
            trial.set_user_attr(SURPLUS_ATTR, True)
            trial.study.stop()
            raise TrialFailed(f"surplus trial {trial.number}: the study has its trials")
        values = recipe.space.sample(trial)
        stage = recipe.trial_recipe(self.arm, values, self.pretrain_runs)
        trial.set_user_attr(OVERRIDES_ATTR, recipe.space.overrides(values))
        tags = {
            schema.PARENT_RUN_ID: self.parent,
            schema.SWEEP_STUDY: trial.study.study_name,
            schema.TRIAL_NUMBER: str(trial.number),
            schema.TRIAL_STATE: "RUNNING",
            schema.TRIAL_PARAMS: json.dumps(values, sort_keys=True)[:MAX_TAG_LENGTH],
            schema.TRIAL_WORKER: WORKER,
        }
        run_name = f"trial-{trial.number}-{self.arm.name}"
        run_id = client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        trial.set_user_attr(RUN_ATTR, run_id)
        report = PruningReport(trial, recipe.monitor_pattern, recipe.task.monitor)
        try:
            if isinstance(stage, PretrainRecipe):
                stage.run(run_id=run_id, on_epoch_end=report, register=False)
            else:
                stage.run(run_id=run_id, on_epoch_end=report)
        except RunStopped as stopped:
            client.set_tag(run_id, schema.TRIAL_STATE, "PRUNED")
            client.set_tag(run_id, schema.TRIAL_PRUNED_EPOCH, str(report.epoch))
            raise optuna.TrialPruned(str(stopped)) from None
        except Exception as err:  # training failed: this configuration, counted
            client.set_tag(run_id, schema.TRIAL_STATE, "FAIL")
            if isinstance(err, UserInputError):
                raise
            reason = f"{type(err).__name__}: {err}"
            trial.set_user_attr(FAILED_ATTR, reason[:500])
            raise TrialFailed(f"trial {trial.number} ({run_id}): {reason}") from err
        except BaseException:  # interrupted: FAIL, and not counted (a resume redoes it)
            client.set_tag(run_id, schema.TRIAL_STATE, "FAIL")
            raise
        value = client.get_run(run_id).data.metrics.get(schema.BEST_VALUE, math.nan)
        if not math.isfinite(value):
            client.set_tag(run_id, schema.TRIAL_STATE, "FAIL")
            trial.set_user_attr(FAILED_ATTR, f"objective is {value}")
            raise TrialFailed(f"trial {trial.number} ({run_id}): objective is {value}")
        client.set_tag(run_id, schema.TRIAL_STATE, "COMPLETE")
        return value

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Say how the trial ended, stop at ``n_trials``, and log a new best on the parent."""
        if trial.user_attrs.get(SURPLUS_ATTR):
            return
        state = trial.state.name
        if trial.state == optuna.trial.TrialState.PRUNED:
            state += f" after epoch {trial.last_step}, last value {trial.value:.4g}"
        elif trial.state == optuna.trial.TrialState.COMPLETE:
            state += f", value {trial.value:.4g}"
        elif trial.user_attrs.get(FAILED_ATTR):
            state += f": {trial.user_attrs[FAILED_ATTR]}"
        print(f"trial {trial.number} ({self.arm.name}): {state}", flush=True)
        counted = counted_trials(study)
        if len(counted) >= self.recipe.n_trials:
            study.stop()
        best = best_trial(study, counted)
        if best is not None and best.number == trial.number:
            log_best(self.client, self.parent, self.arm.name, best, finished_count(counted))
