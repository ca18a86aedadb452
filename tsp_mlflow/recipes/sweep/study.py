"""The sweep's Optuna side: the RDB storage the workers share, one study per arm, the
study's link to its MLflow parent run, and which trials count toward ``n_trials``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import optuna
from hydra.utils import instantiate
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import redact_uri

if TYPE_CHECKING:
    from tsp_mlflow.recipes.sweep.recipe import SweepRecipe

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
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=beat,
                    grace_period=2 * beat if beat else None,
                )
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


def wait_for_attr(
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


def open_studies(
    recipe: SweepRecipe, storage: optuna.storages.BaseStorage
) -> tuple[dict[str, optuna.Study], bool]:
    """Create (or load) one study per arm; ``created``: this worker made the first one
    (and so starts the sweep)."""
    studies: dict[str, optuna.Study] = {}
    created = False
    for i, arm in enumerate(recipe.arms):
        name = f"{recipe.name}/{arm.name}"
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction=recipe.direction,
                sampler=recipe.sampler(joining=i > 0 and not created),
                pruner=instantiate(recipe.cfg.sweep.pruner),
            )
            created = created or i == 0
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(
                study_name=name,
                storage=storage,
                sampler=recipe.sampler(joining=not created),
                pruner=instantiate(recipe.cfg.sweep.pruner),
            )
            if study.direction.name.lower() != recipe.direction:
                raise UserInputError(
                    f"study {name!r} in {redact_uri(recipe.storage_url)} was started to "
                    f"{study.direction.name.lower()}, this sweep would {recipe.direction}; "
                    "choose another --study name"
                ) from None
        studies[arm.name] = study
    return studies, created


def attach_parent_run(
    recipe: SweepRecipe,
    client: MlflowClient,
    studies: dict[str, optuna.Study],
    created: bool,
    project_run: str | None,
) -> str:
    """The sweep's parent run: made by the worker that created the study, found by the
    others through the study's user attributes. Under `mlflow run`, the project's own
    run becomes this worker's record, nested under the parent (`mlflow run` closes its
    run when the process ends, while the parent must stay open for other workers)."""
    first = studies[recipe.arms[0].name]
    settings = recipe.settings()
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    tags = {
        schema.STAGE: schema.STAGE_SWEEP,
        schema.DATASET: recipe.dataset,
        schema.MODALITIES: ",".join(recipe.modalities),
        schema.SWEEP_STUDY: recipe.name,
        schema.SWEEP_N_TRIALS: str(recipe.n_trials),
        schema.TASK: recipe.task.name,
    }
    if created:
        # use_experiment() (the CLI) exported the experiment's id, as `mlflow run` does.
        experiment_id = (
            os.environ.get("MLFLOW_EXPERIMENT_ID")
            or mlflow.set_experiment(recipe.cfg.tracking.experiment).experiment_id
        )
        parent = client.create_run(
            experiment_id,
            run_name=f"sweep-{recipe.name}",
            tags={**tags, schema.SWEEP_ROLE: "parent"},
        ).info.run_id
        client.log_batch(parent, params=[mlflow.entities.Param(k, v) for k, v in settings.items()])
        for study in studies.values():
            study.set_user_attr(SETTINGS_ATTR, settings)
            study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
            study.set_user_attr(PARENT_ATTR, parent)
    else:
        parent = str(wait_for_attr(first, PARENT_ATTR, recipe.name, timeout_s=JOIN_TIMEOUT_S))
        if first.user_attrs.get(FINGERPRINT_ATTR) != fingerprint:
            theirs = first.user_attrs.get(SETTINGS_ATTR, {})
            differ = "; ".join(
                f"{k}: study has {theirs.get(k)!r}, now {v!r}"
                for k, v in settings.items()
                if theirs.get(k) != v
            )
            raise UserInputError(
                f"study {recipe.name!r} was started with other settings ({differ or 'arms'}); "
                "join or resume it with the same dataset, epochs and overrides, or start a "
                "new one with another --study name"
            )
        try:
            run = client.get_run(parent)
        except MlflowException:
            raise UserInputError(
                f"study {recipe.name!r}'s parent run {parent} is not in the tracking store "
                f"{redact_uri(mlflow.get_tracking_uri())}; every worker must use the tracking "
                "URI the study was started with (MLFLOW_TRACKING_URI)"
            ) from None
        if run.info.lifecycle_stage == "deleted":
            raise UserInputError(
                f"study {recipe.name!r}'s parent run {parent} was deleted; start a new sweep "
                "with another --study name"
            )
        client.update_run(parent, status="RUNNING")
        client.set_tag(parent, schema.SWEEP_N_TRIALS, str(recipe.n_trials))
    if project_run:
        client.update_run(project_run, name=f"worker-{WORKER}")
        for key, value in {
            **tags,
            schema.SWEEP_ROLE: "worker",
            schema.PARENT_RUN_ID: parent,
        }.items():
            client.set_tag(project_run, key, value)
    return parent


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
                client.set_tag(
                    run_id,
                    schema.ERROR,
                    "the worker running this trial stopped "
                    "(no heartbeat); a resumed sweep runs the trial again",
                )
                client.set_terminated(run_id, "FAILED")


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts toward ``n_trials``: not a surplus ask, and not a FAIL from
    an interruption or a lost worker (a resumed sweep runs those again). A configuration
    whose training failed does count: running it again would fail again."""
    if trial.user_attrs.get(SURPLUS_ATTR):
        return False
    return trial.state != optuna.trial.TrialState.FAIL or bool(trial.user_attrs.get(FAILED_ATTR))


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward ``n_trials`` (one read of the storage)."""
    return [t for t in study.get_trials(deepcopy=False) if counts(t)]


def finished_count(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(1 for t in trials if t.state.is_finished())


def position(trial: optuna.Trial) -> int:
    """The trial's place among counted trials. Trial numbers are dense and unique across
    workers (the storage assigns them), so exactly one worker gets each place."""
    earlier = trial.study.get_trials(deepcopy=False)[: trial.number]
    return trial.number - sum(1 for t in earlier if not counts(t) and t.state.is_finished())


def best_trial(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None
) -> optuna.trial.FrozenTrial | None:
    """The best COMPLETE trial (ties: the earliest) among ``trials`` (default: all)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    complete = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.value is not None
        and math.isfinite(t.value)
    ]
    if not complete:
        return None
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    return max(complete, key=lambda t: (sign * t.value, -t.number))
