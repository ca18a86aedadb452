"""The sweep recipe: compose and validate a sweep, then run its studies as one worker."""

from __future__ import annotations

import hashlib
import os
import signal
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from omegaconf import DictConfig

from tsp_mlflow.config import compose_config, quote, to_plain
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.grid import encoders_for, expand_conditions
from tsp_mlflow.recipes.multimodal import MultimodalRecipe
from tsp_mlflow.recipes.overrides import SWEEP_RUN_KEYS, override_key, route_overrides
from tsp_mlflow.recipes.pretrain import PretrainRecipe
from tsp_mlflow.recipes.search_space import SearchSpace, parse_search_space
from tsp_mlflow.recipes.shared_pretraining import pretrain_or_reuse
from tsp_mlflow.recipes.sweep.report import summarize
from tsp_mlflow.recipes.sweep.study import (
    PRETRAIN_ATTR,
    STORAGE_ENV,
    WORKER,
    attach_parent_run,
    best_trial,
    close_lost_trials,
    default_storage,
    make_storage,
    open_studies,
    wait_for_attr,
)
from tsp_mlflow.recipes.sweep.trial import TrialRunner
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import redact_overrides, redact_uri
from tsp_mlflow.tracking.session import MAX_TAG_LENGTH

STAGES = ("multimodal", "pretrain")


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
        every = [*plain, *(f"{k}={v}" for k, v in dimensions.items())]
        SWEEP_RUN_KEYS.check(every)
        for item in every:
            key = override_key(item)
            if key.startswith("sweep.params."):
                dim = key.removeprefix("sweep.params.")
                raise UserInputError(
                    f"override {item!r}: give a search dimension in sweep syntax under its own "
                    f"key, e.g. {dim}='interval(0.0, 0.5)' or {dim}='choice(a, b)', and fix one "
                    f"with a plain value, e.g. {dim}=<value>"
                )
        common = [f"data={dataset}"] + ([f"trainer.epochs={epochs}"] if epochs is not None else [])
        routed = route_overrides([*common, *plain], ("sweep", *STAGES))
        self.cfg, choices = compose_config("sweep", routed["sweep"])
        node = self.cfg.sweep
        self.stage = str(node.stage)
        if self.stage not in STAGES:
            raise UserInputError(f"sweep.stage={self.stage!r}: choose one of {', '.join(STAGES)}")
        fixed_keys = {override_key(item) for item in plain}
        params = {k: v for k, v in to_plain(node.params).items() if k not in fixed_keys}
        self.space: SearchSpace = parse_search_space({**params, **dimensions})
        self.n_trials = n_trials if n_trials is not None else node.n_trials
        if (
            not isinstance(self.n_trials, int)
            or isinstance(self.n_trials, bool)
            or self.n_trials < 1
        ):
            raise UserInputError(
                f"trials must be a positive integer, got {self.n_trials!r}; e.g. --trials 20"
            )
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
            m: PretrainRecipe(
                compose_config(
                    "pretrain",
                    [*routed["pretrain"], f"modality={m}", f"seed={self.cfg.pretrain_seed}"],
                )[0]
            )
            for m in self.modalities
            if self.stage == "multimodal" and any(m not in a.scratch for a in self.arms)
        }
        # Every choice and every bound of the space must give a valid trial config; the
        # recipes validate the rest (task, encoder arguments, data root) before any run.
        for values in self.space.corners():
            recipe = self.trial_recipe(self.arms[0], values, pretrain_runs=None)
        self.task = recipe.task
        self.direction = "maximize" if self.task.higher_is_better(self.task.monitor) else "minimize"
        self.monitor_pattern = (
            "-".join(self.modalities) if self.stage == "multimodal" else self.arms[0].name
        )
        self._check_optuna_targets(node)

    # --- configuration --------------------------------------------------------------
    def trial_recipe(
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
        for key, base in (
            ("sampler", optuna.samplers.BaseSampler),
            ("pruner", optuna.pruners.BasePruner),
            ("importance", optuna.importance.BaseImportanceEvaluator),
        ):
            try:
                cls = get_class(node[key]._target_)
            except Exception:
                raise UserInputError(
                    f"sweep.{key}._target_={node[key]._target_!r} cannot be imported"
                ) from None
            if not issubclass(cls, base):
                raise UserInputError(f"sweep.{key}._target_ must name an Optuna {base.__name__}")
        self.sampler()  # e.g. a grid sampler over an interval fails here

    def sampler(self, joining: bool = False) -> optuna.samplers.BaseSampler:
        """A fresh sampler per study (samplers keep state); a grid comes from the space.

        The worker that starts a sweep uses the configured seed (a one-worker sweep is
        reproducible, and every condition sees the same sequence); a joining worker derives
        its own from the seed and its identity, else two workers would propose the same
        configurations side by side.
        """
        node = self.cfg.sweep.sampler
        kwargs: dict[str, Any] = {}
        if (
            issubclass(get_class(node._target_), optuna.samplers.GridSampler)
            and "search_space" not in node
        ):
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
        overrides = [
            o
            for o in redact_overrides(self.overrides)
            if not o.lstrip("+~").startswith(("sweep.n_trials=", "storage="))
        ]
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
        studies, created = open_studies(self, storage)
        client = MlflowClient()
        project_run = os.environ.pop("MLFLOW_RUN_ID", None)  # `mlflow run`'s own run
        parent = attach_parent_run(self, client, studies, created, project_run)
        experiment_id = client.get_run(parent).info.experiment_id
        print(
            f"sweep {self.name}: parent run {parent}; storage {redact_uri(self.storage_url)}",
            flush=True,
        )
        try:
            pretrain_runs = self._pretrained_encoders(studies, created, parent, experiment_id)
            for arm in self.arms:
                runner = TrialRunner(self, arm, parent, experiment_id, pretrain_runs)
                runner.optimize(studies[arm.name])
        except BaseException as err:
            status = RunStatus.KILLED if isinstance(err, KeyboardInterrupt) else RunStatus.FAILED
            self._leave(
                client, studies, parent, project_run, status, f"{type(err).__name__}: {err}"
            )
            raise
        best = {a.name: best_trial(studies[a.name]) for a in self.arms}
        finished = self._leave(client, studies, parent, project_run, RunStatus.FINISHED, None)
        return SweepResult(parent, studies, best, finished)

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
            return dict(wait_for_attr(first, PRETRAIN_ATTR, self.name, parent=parent))
        runs, _ = pretrain_or_reuse(self.pretrain, experiment_id, parent_run_id=parent)
        first.set_user_attr(PRETRAIN_ATTR, runs)
        return runs

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
        running = any(
            s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            for s in studies.values()
        )
        if running:
            print(
                f"sweep {self.name}: other workers are still running trials; the last one "
                "closes the parent run",
                flush=True,
            )
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


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
