"""Bad input: one clear line naming the parameter and fix; no run left RUNNING; nothing registered."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from tests.integration.flow import mlflow_run, runs
from tsp_mlflow.cli import main
from tsp_mlflow.models import SmallCNN
from tsp_mlflow.models.serialization import encoder_spec, save_encoder
from tsp_mlflow.tracking import schema


def tsp(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return int(exit_info.value.code), err.splitlines()[-1]  # MLflow may log INFO lines first


def assert_nothing_left_behind(client: MlflowClient) -> None:
    assert runs(client, "attributes.status = 'RUNNING'") == []
    assert client.search_registered_models() == []


DEFAULT_SPEC = {"out_dim": 64, "in_channels": 1, "width": 16}  # conf/model/encoder/small_cnn.yaml


def encoder_run(tmp_path: Path, modality: str, *, weights_width: int = 16) -> str:
    """A FINISHED pretrain run of ``modality`` whose spec is the default SmallCNN; its
    weights come from a SmallCNN of ``weights_width`` (16 fits, anything else is tampered)."""
    enc = SmallCNN(out_dim=64, width=weights_width)
    folder = save_encoder(enc, encoder_spec(enc, DEFAULT_SPEC), tmp_path / f"enc-{modality}")
    tags = {
        schema.STAGE: schema.STAGE_PRETRAIN,
        schema.MODALITY: modality,
        schema.DATASET: "avdigits",
    }
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_artifacts(str(folder), schema.ENCODER_ARTIFACT_DIR)
    return run.info.run_id


CASES = [
    (["pretrain", "--dataset", "imagenet", "--modality", "audio"], "unknown dataset 'imagenet' (-P dataset); choose one of avdigits"),
    (["pretrain", "--modality", "text"], "unknown modality 'text' for dataset 'avdigits'; choose one of audio, image"),
    (["multimodal", "--fusion", "blend"], "unknown fusion 'blend' (-P fusion); choose one of attention, avg, concat, gated, max, sum"),
    (["multimodal", "--encoders", "audio:scratch"], "malformed encoders='audio:scratch'"),
    (["multimodal", "--encoders", "audio=run:0123abcd"], "encoder run '0123abcd' (from 'run:0123abcd') does not exist"),
    (["multimodal", "--encoders", "image=models:/nope-encoder@champion"], "registered model 'nope-encoder'"),
    (["pretrain", "--modality", "audio", "--epochs", "0"], "epochs must be a positive integer, got 0"),
    (["multimodal", "--epochs", "-3"], "epochs must be a positive integer, got -3"),
    (["pipeline", "--epochs", "ten"], "epochs must be an integer, got 'ten'"),
    (["pipeline", "--seeds", "0"], "seeds must be a positive integer, got 0"),
    (["pipeline", "--overrides", "seed=3"], "the pipeline sets seed for each run itself"),
    (["pretrain", "--modality", "audio", "--overrides", "task.monitor=mae"], "task.monitor='mae' is not a multiclass metric; choose one of accuracy"),
    (["pipeline", "--dataset", "avmnist"], "missing value(s): data.root (the folder holding the dataset's files"),
    (["pretrain", "--dataset", "avmnist", "--modality", "audio", "--overrides", "data.root=/no/such/dir"], "data.root='/no/such/dir' does not exist"),
    (["multimodal", "--dataset", "mmimdb", "--overrides", "data.root=/tmp task=sentiment3"], "task 'sentiment3' reads sentiment targets but dataset 'mmimdb' provides multilabel targets"),
    (["multimodal", "--dataset", "mosi_mmsa", "--overrides", "data.root=/tmp task=multilabel"], "needs data.num_classes, which this dataset does not define"),
    (["pretrain", "--dataset", "mmimdb_raw", "--modality", "text", "--overrides",
      "data.root=/tmp model/encoder@model.encoders.text=minilm model.encoders.text.checkpoint=bert-base-uncased"],
     "model.encoders.text: checkpoint='bert-base-uncased' is not a local folder. tsp-mlflow runs offline and never downloads from the Hugging Face Hub"),
    (["pretrain", "--modality", "audio", "--overrides", "runtime.device=gpu"], "runtime.device='gpu' is not a device"),
    (["analyze", "--experiment", "nope"], "experiment='nope' not found"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_fails_with_one_clear_line(
    args: list[str], message: str, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = tsp(args, capsys)
    assert code == 2
    assert err.startswith("tsp: error: ") and message in err
    client = MlflowClient(tracking_uri)
    assert runs(client, "") == []  # validation happens before any run exists
    assert_nothing_left_behind(client)


def test_weights_that_do_not_fit_name_the_mismatched_keys(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = encoder_run(tmp_path, "audio", weights_width=8)
    code, err = tsp(["multimodal", "--encoders", f"audio=run:{run_id}", "--epochs", "1"], capsys)
    assert code == 2
    assert "do not fit the architecture SmallCNN" in err
    assert "features.0.weight (weights (8, 1, 3, 3) vs model (16, 1, 3, 3))" in err
    client = MlflowClient(tracking_uri)
    assert [r.data.tags.get(schema.STAGE) for r in runs(client, "")] == [
        "pretrain"
    ]  # no fusion run
    assert_nothing_left_behind(client)


def test_encoders_must_match_their_modality_and_the_configured_architecture(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image_run = encoder_run(tmp_path, "image")
    code, err = tsp(["multimodal", "--encoders", f"audio=run:{image_run}"], capsys)
    assert (
        code == 2
        and "was pretrained with tsp.modality=image, but this run needs audio on avdigits" in err
    )
    override = "model/encoder@model.encoders.image=resnet18"
    code, err = tsp(
        ["multimodal", "--encoders", f"image=run:{image_run}", "--overrides", override], capsys
    )
    assert code == 2
    assert "the stored encoder is SmallCNN(in_channels=1, out_dim=64, width=16)" in err
    assert "the config asks for ResNetEncoder(depth=18, in_channels=1, out_dim=64)" in err
    client = MlflowClient(tracking_uri)
    assert [r.data.tags[schema.STAGE] for r in runs(client, "")] == ["pretrain"]
    assert_nothing_left_behind(client)
    assert "nope" not in {e.name for e in client.search_experiments()}


def test_interrupting_marks_the_pending_project_run_killed(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tsp_mlflow.cli as cli

    client = MlflowClient(tracking_uri)
    pending = client.create_run(client.create_experiment("avdigits")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", pending)  # as `mlflow run` leaves it for the entry point

    def interrupted(dataset: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_check_dataset", interrupted)
    code, err = tsp(["pipeline"], capsys)
    assert code == 130 and err == "tsp: interrupted"
    run = client.get_run(pending)
    assert run.info.status == "KILLED" and run.data.tags[schema.ERROR] == "interrupted"


def test_a_run_that_fails_midway_is_failed_with_its_reason_and_registers_nothing(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tsp_mlflow.recipes.pretrain as pretrain

    def disk_full(*args: object, **kwargs: object) -> str:
        raise OSError("No space left on device")

    monkeypatch.setattr(pretrain, "log_encoder_artifact", disk_full)
    code, err = tsp(["pretrain", "--modality", "audio", "--epochs", "1"], capsys)
    assert code == 1 and "No space left on device" in err
    client = MlflowClient(tracking_uri)
    (run,) = runs(client, "")
    assert run.info.status == "FAILED"
    assert run.data.tags[schema.ERROR] == "OSError: No space left on device"
    assert_nothing_left_behind(client)


MLFLOW_RUN_CASES = [
    ("pretrain", {"modality": "text"}, "unknown modality 'text'"),
    ("multimodal", {"encoders": "audio=run:0123abcd", "epochs": 1}, "encoder run '0123abcd'"),
    ("pipeline", {"epochs": 0}, "epochs must be a positive integer, got 0"),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("entry", "params", "message"), MLFLOW_RUN_CASES, ids=[c[0] for c in MLFLOW_RUN_CASES]
)
def test_mlflow_run_marks_the_project_run_failed_with_the_reason(
    entry: str,
    params: dict[str, object],
    message: str,
    subprocess_env: dict[str, str],
    tracking_uri: str,
) -> None:
    result = mlflow_run(entry, params, subprocess_env)
    assert result.returncode != 0
    assert f"tsp: error: {message}" in result.stderr
    client = MlflowClient(tracking_uri)
    (run,) = runs(client, "")
    assert run.info.status == "FAILED"
    assert message in run.data.tags[schema.ERROR]
    assert_nothing_left_behind(client)


def test_secrets_in_pipeline_overrides_are_redacted(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["pipeline", "--seeds", "1", "--overrides", "debug=tiny +tracking.api_token=s3cr3t-value"])
    client = MlflowClient(tracking_uri)
    (pipeline,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    assert pipeline.data.params["pipeline.overrides"] == "debug=tiny +tracking.api_token=***"
    for run in runs(client, ""):
        assert "s3cr3t-value" not in json.dumps(run.data.params) + json.dumps(run.data.tags)


def test_secrets_in_overrides_never_reach_params_or_artifacts(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["pretrain", "--modality", "image", "--epochs", "1",
          "--overrides", "debug=tiny +tracking.api_token=s3cr3t-value"])  # fmt: skip
    client = MlflowClient(tracking_uri)
    (run,) = runs(client, "")
    assert run.data.params["tracking.api_token"] == "***"
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text()
    assert "s3cr3t-value" not in config and "s3cr3t-value" not in json.dumps(run.data.tags)


def test_a_malformed_data_file_fails_before_any_run_with_the_file_named(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.formats import write_avmnist_npy

    root = write_avmnist_npy(tmp_path / "avmnist")
    np.save(root / "audio" / "train_data.npy", np.zeros((40, 112, 100), np.uint8))
    code, err = tsp(["pretrain", "--dataset", "avmnist", "--modality", "audio", "--epochs", "1",
                     "--overrides", f"data.root={root}"], capsys)  # fmt: skip
    assert code == 2
    assert "audio/train_data.npy with shape (N,112,112), found (40, 112, 100)" in err
    client = MlflowClient(tracking_uri)
    assert runs(client, "") == []  # the files are read before the run starts
    assert_nothing_left_behind(client)
