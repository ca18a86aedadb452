"""Model Registry: encoder versions and the ``champion`` alias."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from tsp_mlflow.tracking import schema


def register_encoder(
    *,
    name: str,
    artifact_uri: str,
    run_id: str,
    monitor: str,
    value: float,
    higher_is_better: bool = True,
) -> ModelVersion:
    """Register the run's encoder version (once) and move ``champion`` to the best one.

    Idempotent, so that a resume completes a registration a SIGKILL cut short: a version
    this run created already is kept, and the alias is set again. Versions are ranked by
    the validation metric they were selected with (``tsp.monitor`` tag, in the direction
    of its ``tsp.monitor_mode`` tag); ties keep the older version.

    Args:
        name: registered model name, ``<dataset>-<modality>-encoder``.
        artifact_uri: where the encoder folder lives (the pretrain run's artifact).
        run_id: the pretrain run.
        monitor: validation metric key that ranks versions.
        value: that metric for this version.
        higher_is_better: False for metrics such as MAE.
    """
    client = MlflowClient()
    created_model = False
    try:
        client.create_registered_model(
            name, description="Task-specifically pretrained encoder (tsp-mlflow)."
        )
        created_model = True
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    created: ModelVersion | None = None
    try:
        existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        version = existing[0] if existing else None
        if version is None:
            version = created = client.create_model_version(
                name,
                source=artifact_uri,
                run_id=run_id,
                tags={
                    schema.MODEL_VERSION_MONITOR: monitor,
                    schema.MODEL_VERSION_MONITOR_VALUE: repr(value),
                    schema.MODEL_VERSION_MONITOR_MODE: "max" if higher_is_better else "min",
                },
            )
        # Rank by the metric the current champion was chosen by: a version monitored by
        # another metric is not comparable and never displaces it (move it by hand if meant).
        try:
            current = client.get_model_version_by_alias(name, schema.CHAMPION_ALIAS)
            ranking = current.tags.get(schema.MODEL_VERSION_MONITOR, monitor)
        except MlflowException:
            ranking = monitor
        champion = best_version(client, name, ranking, registering_run=run_id)
        if champion is not None:
            client.set_registered_model_alias(name, schema.CHAMPION_ALIAS, champion)
    except BaseException:
        # A run that fails registers nothing: undo what this call created.
        if created is not None:
            client.delete_model_version(name, created.version)
        if created_model:
            client.delete_registered_model(name)
        raise
    return version


def best_version(
    client: MlflowClient, name: str, monitor: str, registering_run: str | None = None
) -> str | None:
    """The version with the best ``monitor`` value; ties go to the oldest version.

    Versions whose run did not finish are skipped, except the one being registered now
    (its run is still RUNNING).
    """
    best: tuple[float, int] | None = None
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        for mv in page:
            if mv.tags.get(schema.MODEL_VERSION_MONITOR) != monitor:
                continue  # ranked by another metric: not comparable
            if mv.run_id != registering_run and not _finished(client, mv.run_id):
                continue
            sign = -1.0 if mv.tags.get(schema.MODEL_VERSION_MONITOR_MODE) == "min" else 1.0
            key = (sign * float(mv.tags[schema.MODEL_VERSION_MONITOR_VALUE]), -int(mv.version))
            if best is None or key > best:
                best = key
        token = page.token
        if not token:
            break
    return None if best is None else str(-best[1])


def _finished(client: MlflowClient, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.status == "FINISHED"
    except MlflowException:
        return False  # the run was deleted
