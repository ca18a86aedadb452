"""The Model Registry: `champion` follows the best validation metric; URIs resolve or explain."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from tsp_mlflow.tracking.registry import register_encoder
from tsp_mlflow.tracking.resolve import EncoderNotFound, resolve_encoder

NAME = "avdigits-audio-encoder"
MONITOR = "val/audio/accuracy"


def register(value: float, monitor: str = MONITOR) -> str:
    with mlflow.start_run() as run:
        mlflow.log_text("x", "encoder/encoder.json")
    version = register_encoder(
        name=NAME,
        artifact_uri=f"{run.info.artifact_uri}/encoder",
        run_id=run.info.run_id,
        monitor=monitor,
        value=value,
    )
    return str(version.version)


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def test_champion_moves_to_the_best_validation_metric(tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    assert register(0.5) == "1" and champion(client) == "1"
    assert register(0.8) == "2" and champion(client) == "2"
    assert register(0.7) == "3" and champion(client) == "2"  # worse: alias stays
    assert register(0.8) == "4" and champion(client) == "2"  # tie: the older version keeps it
    register(0.99, monitor="val/audio/f1_macro")  # ranked by another metric: not comparable
    assert champion(client) == "2"


def test_a_failed_registration_leaves_nothing_behind(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(tracking_uri)

    def broken(self: MlflowClient, *args: object) -> None:
        raise RuntimeError("alias service down")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
    with pytest.raises(RuntimeError, match="alias service down"):
        register(0.5)
    assert client.search_registered_models() == []
    monkeypatch.undo()
    register(0.6)
    with pytest.raises(RuntimeError):
        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
        register(0.9)
    monkeypatch.undo()
    assert [str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")] == ["1"]
    assert champion(client) == "1"


def test_versions_of_failed_runs_never_become_champion(tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    register(0.5)
    best = register(0.9)
    run_id = client.get_model_version(NAME, best).run_id
    client.set_terminated(run_id, "FAILED")  # e.g. the run died after registering
    register(0.6)
    assert champion(client) == "3"


def test_model_uris_resolve_to_the_version_run_and_explain_what_is_missing(
    tracking_uri: str,
) -> None:
    register(0.5)
    location = resolve_encoder(f"models:/{NAME}@champion")
    assert location.run_id == MlflowClient(tracking_uri).get_model_version(NAME, "1").run_id
    assert location.artifact_uri.endswith("/encoder")
    assert resolve_encoder(f"models:/{NAME}/1").run_id == location.run_id
    with pytest.raises(EncoderNotFound, match=r"has aliases \['champion'\] and versions \[1\]"):
        resolve_encoder(f"models:/{NAME}@best")
    with pytest.raises(EncoderNotFound, match=r"registered models: avdigits-audio-encoder"):
        resolve_encoder("models:/avdigits-text-encoder@champion")
    with pytest.raises(ValueError, match="cannot read encoder URI 'file:///tmp/enc'"):
        resolve_encoder("file:///tmp/enc")
