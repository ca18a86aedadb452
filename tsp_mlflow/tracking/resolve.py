"""Turn an encoder URI into a local folder, with errors that say what exists instead."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tsp_mlflow.errors import EncoderNotFound, UserInputError
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import redact_uri

URI_FORMS = (
    "run:<run_id>, runs:/<run_id>[/encoder], models:/<name>@<alias> or models:/<name>/<version>"
)
_RUN = re.compile(r"^(?:run:|runs:/)(?P<run_id>[0-9a-zA-Z]+)(?:/(?P<path>.+))?$")
_MODEL = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class EncoderLocation:
    uri: str
    run_id: str
    artifact_uri: str  # folder holding encoder.json and model.safetensors


def is_encoder_uri(text: str) -> bool:
    return bool(_RUN.match(text) or _MODEL.match(text))


def resolve_encoder(uri: str, modality: str | None = None) -> EncoderLocation:
    """Resolve ``uri`` against the tracking server, checking that its target exists.

    A contrastive pretrain run holds one encoder per modality (``encoder/<modality>``):
    ``run:<id>`` then picks ``modality``'s.
    """
    client = MlflowClient()
    if m := _RUN.match(uri):
        run_id = m["run_id"]
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise EncoderNotFound(
                f"encoder run {run_id!r} (from {uri!r}) does not exist in tracking store "
                f"{redact_uri(mlflow.get_tracking_uri())}; find pretrain runs with tags.`tsp.stage` = 'pretrain' "
                "in the MLflow UI, or use a registered model URI"
            ) from None
        path = (m["path"] or _default_path(run.data.tags, modality, uri)).strip("/")
        return EncoderLocation(uri, run_id, f"{run.info.artifact_uri.rstrip('/')}/{path}")
    if m := _MODEL.match(uri):
        name = m["name"]
        try:
            client.get_registered_model(name)
        except MlflowException:
            known = sorted(rm.name for rm in client.search_registered_models(max_results=1000))
            raise EncoderNotFound(
                f"registered model {name!r} (from {uri!r}) does not exist; registered models: "
                f"{', '.join(known) or 'none yet (run the pretrain entry point first)'}"
            ) from None
        try:
            if m["alias"]:
                mv = client.get_model_version_by_alias(name, m["alias"])
            else:
                mv = client.get_model_version(name, m["version"])
        except MlflowException:
            rm = client.get_registered_model(name)
            raise EncoderNotFound(
                f"{uri!r} does not exist: model {name!r} has aliases "
                f"{sorted(rm.aliases) or 'none'} and versions "
                f"{sorted(int(v.version) for v in client.search_model_versions(f'name = {name!r}'))}"
            ) from None
        return EncoderLocation(uri, mv.run_id, mv.source)
    raise UserInputError(f"cannot read encoder URI {uri!r}; expected {URI_FORMS}")


def _default_path(tags: dict[str, str], modality: str | None, uri: str) -> str:
    if tags.get(schema.OBJECTIVE) != schema.OBJECTIVE_CONTRASTIVE:
        return schema.ENCODER_ARTIFACT_DIR
    held = [m for m in tags.get(schema.MODALITIES, "").split(",") if m]
    if modality is None or modality not in held:
        forms = ", ".join(f"{uri.rstrip('/')}/{schema.encoder_artifact_path(m)}" for m in held)
        raise EncoderNotFound(
            f"{uri!r} is a contrastive pretrain run holding encoders for {', '.join(held)}"
            + (f", not {modality}" if modality else "")
            + f"; name one: {forms.replace('run:', 'runs:/')}"
        )
    return schema.encoder_artifact_path(modality)


def download_encoder(location: EncoderLocation, dst: Path) -> Path:
    """Download the encoder folder; only JSON and safetensors are read from it afterwards."""
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=location.artifact_uri, dst_path=str(dst)
            )
        )
    except MlflowException as err:
        if "No such artifact" not in str(err) and "does not exist" not in str(err):
            raise
        raise EncoderNotFound(
            f"{location.uri!r}: run {location.run_id} has no encoder at {location.artifact_uri} "
            "(it is not a pretrain run, or the path is wrong); name a pretrain run "
            "(run:<id>) or a registered encoder (models:/<name>@champion)"
        ) from None
