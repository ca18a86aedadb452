"""``sweep``: an Optuna study over a Hydra search space; every trial a nested MLflow run.

One sweep is one MLflow parent run. It holds one Optuna study per condition (``scratch``,
``pretrained``, ...; the same search space for each), named ``<study>/<condition>``, in an
RDB storage that several worker processes or machines share. A worker that starts a new
sweep creates the parent; a worker given the same study name and storage joins it (or
resumes it, when no other worker is running), so every trial of a study lands under the
same parent whichever machine ran it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from tsp_mlflow.config import compose_config, quote, to_plain
from tsp_mlflow.errors import RunStopped, UserInputError
from tsp_mlflow.recipes.grid import encoders_for, expand_conditions
from tsp_mlflow.recipes.multimodal import MultimodalRecipe
from tsp_mlflow.recipes.pipeline import pretrain_or_reuse, route_overrides
from tsp_mlflow.recipes.pretrain import PretrainRecipe
from tsp_mlflow.recipes.search_space import SearchSpace, parse_search_space
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import redact_overrides, redact_uri
from tsp_mlflow.tracking.session import MAX_TAG_LENGTH
from tsp_mlflow.training.loop import EpochMetrics

STAGES = ("multimodal", "pretrain")
PER_TRIAL_KEYS = ("seed", "encoders")  # the sweep sets them for every trial
STORAGE_ENV = "TSP_SWEEP_STORAGE"  # the storage URL, kept out of `mlflow run`'s logged params
PARENT_ATTR = "tsp.mlflow_parent_run_id"  # Optuna study user attrs
SETTINGS_ATTR = "tsp.settings"
FINGERPRINT_ATTR = "tsp.fingerprint"
RUN_ATTR = "tsp.mlflow_run_id"  # Optuna trial user attrs
OVERRIDES_ATTR = "tsp.overrides"
SURPLUS_ATTR = "tsp.surplus"  # a trial asked for after the study had its n_trials
FAILED_ATTR = "tsp.failed"  # why a trial's training failed (such a FAIL counts)
PRETRAIN_ATTR = "tsp.pretrain_runs"  # modality -> encoder run, set by the starting worker
JOIN_TIMEOUT_S = 120.0
STORAGE_ATTEMPTS = 4
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which worker ran a trial


class TrialFailed(Exception):
    """A trial's training raised; the trial is FAIL in Optuna, FAILED in MLflow, and the
    sweep goes on (one diverging configuration must not end a long sweep)."""


@dataclass(frozen=True)
class Arm:
    """One study of the sweep: a condition of a multimodal sweep, or a pretrain modality."""

    name: str
    scratch: tuple[str, ...] = ()  # modalities from scratch (multimodal sweeps)


@dataclass
class SweepResult:
    run_id: str
    studies: dict[str, optuna.Study]
    best: dict[str, optuna.trial.FrozenTrial | None]
    finished: bool  # the parent is closed (no other worker is still running trials)


class SweepRecipe:
    """Compose and validate the sweep and every corner of its search space before any run.

    Args:
        dataset: a ``data/`` option.
        epochs: epochs for every trial (None keeps the configs' value).
        overrides: Hydra overrides. One in sweep syntax (``optim.lr='interval(1e-4,1e-2)'``)
            adds or replaces a search dimension; a plain one on a searched key fixes it;
            the rest reach every config that has the key (``sweep=sensitivity``,
            ``sweep.n_trials=40``, ``trainer.epochs=5``, ``modality=audio``).
        n_trials: trials per condition (None keeps ``sweep.n_trials``).
        study: the study's name (None: ``study`` in the config, else ``<dataset>-<option>``).
        storage: an RDB URL (None: ``$TSP_SWEEP_STORAGE``, ``storage``, else ./optuna.db).
    """

    def __init__(
        self,
        dataset: str,
        epochs: int | None,
        overrides: Sequence[str],
        *,
        n_trials: int | None = None,
        study: str | None = None,
        storage: str | None = None,
    ) -> None:
        dimensions, plain = split_sweep_overrides(overrides)
        for item in [*plain, *(f"{k}={v}" for k, v in dimensions.items())]:
            key = item.lstrip("+~").partition("=")[0]
            if key.startswith("sweep.params."):
                dim = key.removeprefix("sweep.params.")
                raise UserInputError(
                    f"override {item!r}: give a search dimension in sweep syntax under its own "
                    f"key, e.g. {dim}='interval(0.0, 0.5)' or {dim}='choice(a, b)', and fix one "
                    f"with a plain value, e.g. {dim}=<value>"
                )
            if key in PER_TRIAL_KEYS:
                raise UserInputError(
                    f"override {item!r}: the sweep sets {key} for every trial; use "
                    "trial_seed=N for the trials' seed, sweep.conditions=[...] for the encoders"
                )
        common = [f"data={dataset}"] + ([f"trainer.epochs={epochs}"] if epochs is not None else [])
        routed = route_overrides([*common, *plain], ("sweep", *STAGES))
        self.cfg, choices = compose_config("sweep", routed["sweep"])
        node = self.cfg.sweep
        self.stage = str(node.stage)
        if self.stage not in STAGES:
            raise UserInputError(f"sweep.stage={self.stage!r}: choose one of {', '.join(STAGES)}")
        fixed_keys = {item.lstrip("+~").partition("=")[0] for item in plain}
        params = {k: v for k, v in to_plain(node.params).items() if k not in fixed_keys}
        self.space: SearchSpace = parse_search_space({**params, **dimensions})
        self.n_trials = n_trials if n_trials is not None else node.n_trials
        if (
            not isinstance(self.n_trials, int)
            or isinstance(self.n_trials, bool)
            or self.n_trials < 1
        ):
            raise UserInputError(f"trials must be a positive integer, got {self.n_trials!r}; e.g. --trials 20")  # fmt: skip
        self.name = study or self.cfg.study or f"{dataset}-{choices['sweep']}"
        if "/" in self.name or not self.name.strip():
            raise UserInputError(f"study={self.name!r}: use a name without '/'")
        self.storage_url = (
            storage or os.environ.get(STORAGE_ENV) or self.cfg.storage or default_storage()
        )
        heartbeat = self.cfg.heartbeat_s
        if not isinstance(heartbeat, int) or isinstance(heartbeat, bool) or heartbeat < 1:
            raise UserInputError(
                f"heartbeat_s={heartbeat!r}: give a positive number of seconds (without "
                "heartbeats a dead worker's trial would stay RUNNING and the sweep never closes)"
            )
        self.dataset = dataset
        self.overrides = list(overrides)
        self.epochs = epochs
        self.stage_overrides = routed[self.stage]
        self.modalities: list[str] = list(self.cfg.data.modalities)

        probe, _ = compose_config(self.stage, self.stage_overrides)
        if self.stage == "pretrain":
            self.arms = [Arm(str(probe.modality))]
        else:
            conditions = expand_conditions(list(node.conditions), self.modalities)
            if schema.CONDITION_CONTRASTIVE in conditions:
                raise UserInputError(
                    "sweep.conditions: contrastive is not supported in sweeps (they pretrain "
                    "supervised encoders); pretrain contrastively first (tsp pretrain "
                    "--objective contrastive) and sweep with encoders from it via multimodal"
                )
            if not conditions:
                raise UserInputError("sweep.conditions is empty; e.g. sweep.conditions=[scratch]")
            self.arms = [Arm(name, scratch) for name, scratch in conditions.items()]
        self.metric = str(node.metric) if node.metric else None
        self.pretrain = {
            m: PretrainRecipe(compose_config("pretrain", [*routed["pretrain"], f"modality={m}",
                                                          f"seed={self.cfg.pretrain_seed}"])[0])
            for m in self.modalities
            if self.stage == "multimodal" and any(m not in a.scratch for a in self.arms)
        }  # fmt: skip
        # Every choice and every bound of the space must give a valid trial config; the
        # recipes validate the rest (task, encoder arguments, data root) before any run.
        for values in self.space.corners():
            recipe = self._recipe(self.arms[0], values, pretrain_runs=None)
        self.task = recipe.task
        self.direction = "maximize" if self.task.higher_is_better(self.task.monitor) else "minimize"
        self.monitor_pattern = "-".join(self.modalities) if self.stage == "multimodal" else self.arms[0].name  # fmt: skip
        self._check_optuna_targets(node)

    # --- configuration --------------------------------------------------------------
    def _recipe(
        self, arm: Arm, values: dict[str, Any], pretrain_runs: dict[str, str] | None
    ) -> MultimodalRecipe | PretrainRecipe:
        """The trial's recipe; without ``pretrain_runs`` every encoder is scratch (validation)."""
        # Trials are never resumed (an interrupted trial is redone), so they skip checkpoints.
        shared = [f"seed={self.cfg.trial_seed}", "trainer.checkpoint.every_n_epochs=0"]
        if self.metric:
            shared.append(f"task.monitor={self.metric}")
        overrides = [*self.stage_overrides, *shared, *self.space.overrides(values)]
        try:
            if self.stage == "pretrain":
                return PretrainRecipe(compose_config("pretrain", overrides)[0])
            scratch = arm.scratch if pretrain_runs is not None else tuple(self.modalities)
            encoders = encoders_for(scratch, self.modalities, pretrain_runs or {})
            cfg, choices = compose_config("multimodal", [*overrides, f"encoders={quote(encoders)}"])
            return MultimodalRecipe(cfg, fusion_name=choices["model/fusion"], condition=arm.name)
        except UserInputError as err:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            raise UserInputError(f"sweep trial with {shown}: {err}") from None

    def _check_optuna_targets(self, node: DictConfig) -> None:
        for key, base in (("sampler", optuna.samplers.BaseSampler),
                          ("pruner", optuna.pruners.BasePruner),
                          ("importance", optuna.importance.BaseImportanceEvaluator)):  # fmt: skip
            try:
                cls = get_class(node[key]._target_)
            except Exception:
                raise UserInputError(f"sweep.{key}._target_={node[key]._target_!r} cannot be imported") from None  # fmt: skip
            if not issubclass(cls, base):
                raise UserInputError(f"sweep.{key}._target_ must name an Optuna {base.__name__}")
        self._sampler()  # e.g. a grid sampler over an interval fails here

    def _sampler(self, joining: bool = False) -> optuna.samplers.BaseSampler:
        """A fresh sampler per study (samplers keep state); a grid comes from the space.

        The worker that starts a sweep uses the configured seed (a one-worker sweep is
        reproducible, and every condition sees the same sequence); a joining worker derives
        its own from the seed and its identity, else two workers would propose the same
        configurations side by side.
        """
        node = self.cfg.sweep.sampler
        kwargs: dict[str, Any] = {}
        if issubclass(get_class(node._target_), optuna.samplers.GridSampler) and "search_space" not in node:  # fmt: skip
            kwargs["search_space"] = self.space.grid()
        if joining and node.get("seed") is not None:
            digest = hashlib.sha256(f"{node.seed}:{WORKER}".encode()).digest()
            kwargs["seed"] = int.from_bytes(digest[:4], "little")
        return instantiate(node, **kwargs)

    @property
    def objective_key(self) -> str:
        """The metric a trial's objective is the best value of, e.g. ``val/audio-image/accuracy``."""
        return schema.metric_key("val", self.monitor_pattern, self.task.monitor)

    def settings(self) -> dict[str, str]:
        """What a study was started with: a worker must match it to join (n_trials aside)."""
        node = self.cfg.sweep
        overrides = [o for o in redact_overrides(self.overrides)
                     if not o.lstrip("+~").startswith(("sweep.n_trials=", "storage="))]  # fmt: skip
        return {
            "sweep.study": self.name,
            "sweep.dataset": self.dataset,
            "sweep.stage": self.stage,
            "sweep.arms": ",".join(a.name for a in self.arms),
            "sweep.metric": self.objective_key,
            "sweep.direction": self.direction,
            "sweep.epochs": "config" if self.epochs is None else str(self.epochs),
            "sweep.overrides": " ".join(overrides) or "none",
            "sweep.trial_seed": str(self.cfg.trial_seed),
            "sweep.sampler": _target_line(node.sampler),
            "sweep.pruner": _target_line(node.pruner),
            **{f"sweep.params.{k}": text for k, text in self.space.expressions},
            **({"sweep.fixed": " ".join(self.space.fixed)} if self.space.fixed else {}),
        }

    # --- the run --------------------------------------------------------------------
    def run(self) -> SweepResult:
        """Join (or start) the sweep, run trials until each study has ``n_trials``, leave.

        SIGTERM is turned into KeyboardInterrupt for the whole run, so a worker stopped by
        a scheduler still leaves its trial and, if it is the last one, the parent closed.
        """
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            return self._run()
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(self) -> SweepResult:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say it once
        storage = make_storage(self.storage_url, self.cfg.heartbeat_s)
        studies, created = self._open_studies(storage)
        client = MlflowClient()
        project_run = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run`'s own run
        parent = self._attach_parent(client, studies, created, project_run)
        experiment_id = client.get_run(parent).info.experiment_id
        print(f"sweep {self.name}: parent run {parent}; storage {redact_uri(self.storage_url)}", flush=True)  # fmt: skip
        try:
            pretrain_runs = self._pretrained_encoders(studies, created, parent, experiment_id)
            for arm in self.arms:
                self._optimize(studies[arm.name], arm, parent, experiment_id, pretrain_runs)
        except BaseException as err:
            status = RunStatus.KILLED if isinstance(err, KeyboardInterrupt) else RunStatus.FAILED
            self._leave(client, studies, parent, project_run, status, f"{type(err).__name__}: {err}")  # fmt: skip
            raise
        best = {a.name: _best(studies[a.name]) for a in self.arms}
        finished = self._leave(client, studies, parent, project_run, RunStatus.FINISHED, None)
        return SweepResult(parent, studies, best, finished)

    def _open_studies(self, storage: optuna.storages.BaseStorage) -> tuple[dict[str, optuna.Study], bool]:  # fmt: skip
        """Create (or load) one study per arm; ``created``: this worker made the first one
        (and so starts the sweep)."""
        studies: dict[str, optuna.Study] = {}
        created = False
        for i, arm in enumerate(self.arms):
            name = f"{self.name}/{arm.name}"
            try:
                study = optuna.create_study(
                    study_name=name, storage=storage, direction=self.direction,
                    sampler=self._sampler(joining=i > 0 and not created),
                    pruner=instantiate(self.cfg.sweep.pruner),
                )  # fmt: skip
                created = created or i == 0
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(
                    study_name=name, storage=storage, sampler=self._sampler(joining=not created),
                    pruner=instantiate(self.cfg.sweep.pruner),
                )  # fmt: skip
                if study.direction.name.lower() != self.direction:
                    raise UserInputError(
                        f"study {name!r} in {redact_uri(self.storage_url)} was started to "
                        f"{study.direction.name.lower()}, this sweep would {self.direction}; "
                        "choose another --study name"
                    ) from None
            studies[arm.name] = study
        return studies, created

    def _attach_parent(
        self,
        client: MlflowClient,
        studies: dict[str, optuna.Study],
        created: bool,
        project_run: str | None,
    ) -> str:
        """The sweep's parent run: made by the worker that created the study, found by the
        others through the study's user attributes. Under `mlflow run`, the project's own
        run becomes this worker's record, nested under the parent (`mlflow run` closes its
        run when the process ends, while the parent must stay open for other workers)."""
        first = studies[self.arms[0].name]
        settings = self.settings()
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        tags = {schema.STAGE: schema.STAGE_SWEEP, schema.DATASET: self.dataset,
                schema.MODALITIES: ",".join(self.modalities), schema.SWEEP_STUDY: self.name,
                schema.SWEEP_N_TRIALS: str(self.n_trials), schema.TASK: self.task.name}  # fmt: skip
        if created:
            # use_experiment() (the CLI) exported the experiment's id, as `mlflow run` does.
            experiment_id = (
                os.environ.get("MLFLOW_EXPERIMENT_ID")
                or mlflow.set_experiment(self.cfg.tracking.experiment).experiment_id
            )
            parent = client.create_run(
                experiment_id, run_name=f"sweep-{self.name}", tags={**tags, schema.SWEEP_ROLE: "parent"}
            ).info.run_id  # fmt: skip
            client.log_batch(parent, params=[mlflow.entities.Param(k, v) for k, v in settings.items()])  # fmt: skip
            for study in studies.values():
                study.set_user_attr(SETTINGS_ATTR, settings)
                study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
                study.set_user_attr(PARENT_ATTR, parent)
        else:
            parent = str(_wait_for_attr(first, PARENT_ATTR, self.name, timeout_s=JOIN_TIMEOUT_S))
            if first.user_attrs.get(FINGERPRINT_ATTR) != fingerprint:
                theirs = first.user_attrs.get(SETTINGS_ATTR, {})
                differ = "; ".join(f"{k}: study has {theirs.get(k)!r}, now {v!r}"
                                   for k, v in settings.items() if theirs.get(k) != v)  # fmt: skip
                raise UserInputError(
                    f"study {self.name!r} was started with other settings ({differ or 'arms'}); "
                    "join or resume it with the same dataset, epochs and overrides, or start a "
                    "new one with another --study name"
                )
            try:
                run = client.get_run(parent)
            except MlflowException:
                raise UserInputError(
                    f"study {self.name!r}'s parent run {parent} is not in the tracking store "
                    f"{redact_uri(mlflow.get_tracking_uri())}; every worker must use the tracking "
                    "URI the study was started with (MLFLOW_TRACKING_URI)"
                ) from None
            if run.info.lifecycle_stage == "deleted":
                raise UserInputError(
                    f"study {self.name!r}'s parent run {parent} was deleted; start a new sweep "
                    "with another --study name"
                )
            client.update_run(parent, status="RUNNING")
            client.set_tag(parent, schema.SWEEP_N_TRIALS, str(self.n_trials))
        if project_run:
            client.update_run(project_run, name=f"worker-{WORKER}")
            for key, value in {**tags, schema.SWEEP_ROLE: "worker",
                               schema.PARENT_RUN_ID: parent}.items():  # fmt: skip
                client.set_tag(project_run, key, value)
        return parent

    def _pretrained_encoders(
        self, studies: dict[str, optuna.Study], created: bool, parent: str, experiment_id: str
    ) -> dict[str, str]:
        """The encoder run per modality for pretrained conditions: trained (or reused) once
        by the worker that started the sweep, read by the others from the study, so every
        trial of the sweep starts from the same encoders."""
        if not self.pretrain:
            return {}
        first = studies[self.arms[0].name]
        if not created:
            return dict(_wait_for_attr(first, PRETRAIN_ATTR, self.name, parent=parent))
        runs, _ = pretrain_or_reuse(self.pretrain, experiment_id, parent_run_id=parent)
        first.set_user_attr(PRETRAIN_ATTR, runs)
        return runs

    def _optimize(
        self,
        study: optuna.Study,
        arm: Arm,
        parent: str,
        experiment_id: str,
        pretrain_runs: dict[str, str],
    ) -> None:
        if len(_counted(study)) >= self.n_trials:
            print(f"study {study.study_name}: {self.n_trials} trials already", flush=True)
            return
        client = MlflowClient()

        def objective(trial: optuna.Trial) -> float:
            if _position(trial) >= self.n_trials:  # another worker asked for the last one first
                trial.set_user_attr(SURPLUS_ATTR, True)
                trial.study.stop()
                raise TrialFailed(f"surplus trial {trial.number}: the study has its trials")
            values = self.space.sample(trial)
            recipe = self._recipe(arm, values, pretrain_runs)
            trial.set_user_attr(OVERRIDES_ATTR, self.space.overrides(values))
            tags = {schema.PARENT_RUN_ID: parent, schema.SWEEP_STUDY: study.study_name,
                    schema.TRIAL_NUMBER: str(trial.number), schema.TRIAL_STATE: "RUNNING",
                    schema.TRIAL_PARAMS: json.dumps(values, sort_keys=True)[:MAX_TAG_LENGTH],
                    schema.TRIAL_WORKER: WORKER}  # fmt: skip
            run_id = client.create_run(experiment_id, run_name=f"trial-{trial.number}-{arm.name}", tags=tags).info.run_id  # fmt: skip
            trial.set_user_attr(RUN_ATTR, run_id)
            report = PruningReport(trial, self.monitor_pattern, self.task.monitor)
            try:
                if isinstance(recipe, PretrainRecipe):
                    recipe.run(run_id=run_id, on_epoch_end=report, register=False)
                else:
                    recipe.run(run_id=run_id, on_epoch_end=report)
            except RunStopped as stopped:
                client.set_tag(run_id, schema.TRIAL_STATE, "PRUNED")
                client.set_tag(run_id, schema.TRIAL_PRUNED_EPOCH, str(report.epoch))
                raise optuna.TrialPruned(str(stopped)) from None
            except Exception as err:  # training failed: this configuration, counted
                client.set_tag(run_id, schema.TRIAL_STATE, "FAIL")
                if isinstance(err, UserInputError):
                    raise
                trial.set_user_attr(FAILED_ATTR, f"{type(err).__name__}: {err}"[:500])
                raise TrialFailed(f"trial {trial.number} ({run_id}): {type(err).__name__}: {err}") from err  # fmt: skip
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

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if trial.user_attrs.get(SURPLUS_ATTR):
                return
            state = trial.state.name
            if trial.state == optuna.trial.TrialState.PRUNED:
                state += f" after epoch {trial.last_step}, last value {trial.value:.4g}"
            elif trial.state == optuna.trial.TrialState.COMPLETE:
                state += f", value {trial.value:.4g}"
            elif trial.user_attrs.get(FAILED_ATTR):
                state += f": {trial.user_attrs[FAILED_ATTR]}"
            print(f"trial {trial.number} ({arm.name}): {state}", flush=True)
            counted = _counted(study)
            if len(counted) >= self.n_trials:
                study.stop()
            best = _best(study, counted)
            if best is not None and best.number == trial.number:
                log_best(client, parent, arm.name, best, _finished(counted))

        study.optimize(objective, callbacks=[after_trial], catch=(TrialFailed,))

    def _leave(
        self,
        client: MlflowClient,
        studies: dict[str, optuna.Study],
        parent: str,
        worker_run: str | None,
        status: int,
        reason: str | None,
    ) -> bool:
        """Close this worker's part. The last worker out (no trial still running anywhere
        in the sweep) writes the summary and closes the parent; returns whether it did.
        Trials of workers that died (no heartbeat) are failed in Optuna and in MLflow."""
        if worker_run:
            if reason:
                client.set_tag(worker_run, schema.ERROR, reason[:MAX_TAG_LENGTH])
            client.set_terminated(worker_run, RunStatus.to_string(status))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for study in studies.values():
                optuna.storages.fail_stale_trials(study)
        close_lost_trials(client, studies)
        running = any(s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                      for s in studies.values())  # fmt: skip
        if running:
            print(f"sweep {self.name}: other workers are still running trials; the last one "
                  "closes the parent run", flush=True)  # fmt: skip
            return False
        try:
            if status == RunStatus.FINISHED:
                summarize(client, parent, self, studies)
        except Exception as err:  # the trials are done either way: close the parent
            status, reason = RunStatus.FAILED, f"summary failed: {type(err).__name__}: {err}"
            raise
        finally:
            if reason:
                client.set_tag(parent, schema.ERROR, reason[:MAX_TAG_LENGTH])
            client.set_terminated(parent, RunStatus.to_string(status))
        return True


def close_lost_trials(client: MlflowClient, studies: dict[str, optuna.Study]) -> None:
    """A trial Optuna failed for a lost heartbeat still has a RUNNING MLflow run (its
    worker died before it could close it): close it FAILED, with the reason."""
    for study in studies.values():
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            run_id = trial.user_attrs.get(RUN_ATTR)
            if not run_id or trial.user_attrs.get(FAILED_ATTR):
                continue
            run = client.get_run(run_id)
            if run.info.status == "RUNNING":
                client.set_tag(run_id, schema.TRIAL_STATE, "FAIL")
                client.set_tag(run_id, schema.ERROR, "the worker running this trial stopped "
                               "(no heartbeat); a resumed sweep runs the trial again")  # fmt: skip
                client.set_terminated(run_id, "FAILED")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
            raise RunStopped(f"pruned by the sweep's pruner after epoch {epoch}: {key} = {value:.4g}")  # fmt: skip


# --- storage, parents, summaries ---------------------------------------------------------
def make_storage(url: str, heartbeat_s: int | None) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats, so a dead worker's trial is marked FAIL."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # workers wait for the file lock
    elif url.startswith("postgresql://"):
        try:
            import psycopg  # noqa: F401  (SQLAlchemy's default PostgreSQL driver)
        except ImportError:
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    beat = int(heartbeat_s) if heartbeat_s else None
    error: Exception | None = None
    # Workers started together race to create the schema in a new database; the loser's
    # CREATE fails ("already exists"), and a second attempt finds the tables in place.
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=beat,
                    grace_period=2 * beat if beat else None,
                )  # fmt: skip
        except Exception as err:  # a bad URL, an unreachable server, a missing driver
            error = err
            time.sleep(0.5 * (attempt + 1))
    raise UserInputError(
        f"storage={redact_uri(url)!r}: {type(error).__name__}: {str(error).splitlines()[0]}; "
        "give an SQLAlchemy URL such as sqlite:///optuna.db or "
        "postgresql+psycopg2://user@host/db (password via PGPASSWORD or ~/.pgpass)"
    ) from None


def default_storage() -> str:
    """``optuna.db`` beside a sqlite tracking store (the two belong together: a study's
    parent run lives in that store), else in the working directory."""
    tracking = mlflow.get_tracking_uri()
    if tracking.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    return f"sqlite:///{Path.cwd() / 'optuna.db'}"


def _wait_for_attr(
    study: optuna.Study,
    key: str,
    name: str,
    *,
    timeout_s: float | None = None,
    parent: str | None = None,
) -> Any:
    """A study user attribute the starting worker sets (the parent run id right after
    creating the study; the encoder runs once pretrained). Without a timeout, waits while
    the sweep's parent is RUNNING."""
    deadline = time.monotonic() + timeout_s if timeout_s else math.inf
    while True:
        value = study.user_attrs.get(key)
        if value:
            return value
        if time.monotonic() > deadline:
            raise UserInputError(
                f"study {name!r} exists but has no MLflow parent run after {timeout_s:.0f} s "
                "(its first worker died while starting?); start a new sweep with another --study"
            )
        if parent and MlflowClient().get_run(parent).info.status != "RUNNING":
            raise UserInputError(
                f"study {name!r}: the worker that started the sweep stopped before its "
                f"pretrained encoders were ready (parent run {parent}); start it again"
            )
        time.sleep(1.0)


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts toward ``n_trials``: not a surplus ask, and not a FAIL from
    an interruption or a lost worker (a resumed sweep runs those again). A configuration
    whose training failed does count: running it again would fail again."""
    if trial.user_attrs.get(SURPLUS_ATTR):
        return False
    return trial.state != optuna.trial.TrialState.FAIL or bool(trial.user_attrs.get(FAILED_ATTR))


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward ``n_trials`` (one read of the storage)."""
    return [t for t in study.get_trials(deepcopy=False) if _counts(t)]


def _finished(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(1 for t in trials if t.state.is_finished())


def _position(trial: optuna.Trial) -> int:
    """The trial's place among counted trials. Trial numbers are dense and unique across
    workers (the storage assigns them), so exactly one worker gets each place."""
    earlier = trial.study.get_trials(deepcopy=False)[: trial.number]
    return trial.number - sum(1 for t in earlier if not _counts(t) and t.state.is_finished())


def _best(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None
) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial (ties: the earliest) among ``trials`` (default: all)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.value is not None and math.isfinite(t.value)]  # fmt: skip
    if not complete:
        return None
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    return max(complete, key=lambda t: (sign * t.value, -t.number))


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
        ],  # fmt: skip
        tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()],
    )


def summarize(
    client: MlflowClient, parent: str, recipe: SweepRecipe, studies: dict[str, optuna.Study]
) -> None:
    """The parent's record of a whole sweep: per arm the best trial (tags, metric,
    ``best.json`` with the overrides that reproduce it), the trials table, the
    param-importance table and figure, the optimisation history; the sensitivity report
    when the sweep compares conditions; and a description shown in the MLflow UI."""
    lines = [f"**Optuna sweep `{recipe.name}`** on {recipe.dataset}: {recipe.direction} "
             f"{recipe.objective_key}.", ""]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tsp-sweep-") as tmp:
        for arm, study in studies.items():
            folder = Path(tmp) / arm
            folder.mkdir()
            trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]  # fmt: skip
            counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}  # fmt: skip
            client.log_batch(parent, metrics=[
                mlflow.entities.Metric(f"sweep/{arm}/trials_{s.lower()}", n, int(time.time() * 1000), len(trials))
                for s, n in counts.items()])  # fmt: skip
            frame = study.trials_dataframe()
            frame[frame["number"].isin([t.number for t in trials])].to_csv(folder / "trials.csv", index=False)  # fmt: skip
            best = _best(study, trials)
            counted = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
            if best is None:
                lines.append(f"- **{arm}**: no complete trial ({counted}).")
                continue
            log_best(client, parent, arm, best, _finished([t for t in trials if _counts(t)]))
            document = {
                "trial": best.number, "value": best.value, "params": best.params,
                "run_id": best.user_attrs.get(RUN_ATTR),
                "overrides": best.user_attrs.get(OVERRIDES_ATTR, []),
            }  # fmt: skip
            (folder / "best.json").write_text(json.dumps(document, indent=2, default=str))
            importance = write_importance(study, recipe, folder)
            shown = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
            lines.append(f"- **{arm}**: best {best.value:.4g} (trial {best.number}: {shown}); "
                         f"{counted}. {importance}")  # fmt: skip
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
    varied = [k for k in recipe.space.distributions
              if len({repr(t.params.get(k)) for t in complete}) > 1]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        target = recipe.objective_key
        figure = optuna_plots.plot_optimization_history(study, target_name=target).figure
        figure.savefig(folder / "history.png", dpi=120, bbox_inches="tight")
        values = {t.value for t in complete}
        if len(complete) < 2 or not varied or len(values) < 2:
            note = (f"No param importance: it needs complete trials that differ in both their "
                    f"parameters and their value ({len(complete)} complete, {len(values)} distinct "
                    "values).")  # fmt: skip
            (folder / "importance.md").write_text(note + "\n")
            return note
        evaluator = instantiate(recipe.cfg.sweep.importance)
        try:
            scores = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)  # fmt: skip
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
            + "\n".join(lines) + "\n"
        )  # fmt: skip
        axes = optuna_plots.plot_param_importances(
            study, evaluator=evaluator, params=varied, target_name=target
        )
        axes.figure.savefig(folder / "importance.png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close("all")
    top = next(iter(scores))
    return f"Most important: {top} ({scores[top]:.2f})."


def split_sweep_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Overrides in sweep syntax (search dimensions) apart from plain ones."""
    parser = OverridesParser.create()
    dimensions, plain = {}, []
    for item in overrides:
        try:
            (override,) = parser.parse_overrides([item])
        except HydraException as err:
            raise UserInputError(f"override {item!r}: {err}") from None
        if override.is_sweep_override():
            key, _, expression = item.partition("=")
            dimensions[key.strip()] = expression  # as written: `+key` adds a new key
        else:
            plain.append(item)
    return dimensions, plain


def _target_line(node: DictConfig) -> str:
    args = ", ".join(f"{k}={v}" for k, v in node.items() if k != "_target_")
    return f"{node._target_.rsplit('.', 1)[-1]}({args})"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
