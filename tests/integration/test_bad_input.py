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
from tsp_mlflow.config import group_options
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
    (
        ["pretrain", "--dataset", "imagenet", "--modality", "audio"],
        "unknown dataset 'imagenet' (-P dataset); choose one of avdigits",
    ),
    (
        ["pretrain", "--modality", "text"],
        "unknown modality 'text' for dataset 'avdigits'; choose one of audio, image",
    ),
    (
        ["multimodal", "--fusion", "blend"],
        f"unknown fusion 'blend' (-P fusion); choose one of {', '.join(group_options('model/fusion'))}",
    ),
    (["multimodal", "--encoders", "audio:scratch"], "malformed encoders='audio:scratch'"),
    (
        ["multimodal", "--encoders", "audio=run:0123abcd"],
        "encoder run '0123abcd' (from 'run:0123abcd') does not exist",
    ),
    (
        ["multimodal", "--encoders", "image=models:/nope-encoder@champion"],
        "registered model 'nope-encoder'",
    ),
    (
        ["pretrain", "--modality", "audio", "--epochs", "0"],
        "epochs must be a positive integer, got 0",
    ),
    (["multimodal", "--epochs", "-3"], "epochs must be a positive integer, got -3"),
    (["pipeline", "--epochs", "ten"], "epochs must be an integer, got 'ten'"),
    (["pipeline", "--seeds", "0"], "seeds must be a positive integer or auto, got '0'"),
    (["pipeline", "--overrides", "seed=3"], "the pipeline sets seed for each run itself"),
    (
        ["pretrain", "--modality", "audio", "--overrides", "task.monitor=mae"],
        "task.monitor='mae' is not a multiclass metric; choose one of accuracy",
    ),
    (
        ["pipeline", "--dataset", "avmnist"],
        "missing value(s): data.root (the folder holding the dataset's files",
    ),
    (
        [
            "pretrain",
            "--dataset",
            "avmnist",
            "--modality",
            "audio",
            "--overrides",
            "data.root=/no/such/dir",
        ],
        "data.root='/no/such/dir' does not exist",
    ),
    (
        ["multimodal", "--dataset", "mmimdb", "--overrides", "data.root=/tmp task=sentiment3"],
        "task 'sentiment3' reads sentiment targets but dataset 'mmimdb' provides multilabel targets",
    ),
    (
        ["multimodal", "--dataset", "mosi_mmsa", "--overrides", "data.root=/tmp task=multilabel"],
        "needs data.num_classes, which this dataset does not define",
    ),
    (
        [
            "pretrain",
            "--dataset",
            "mmimdb_raw",
            "--modality",
            "text",
            "--overrides",
            "data.root=/tmp model/encoder@model.encoders.text=minilm model.encoders.text.checkpoint=bert-base-uncased",
        ],
        "model.encoders.text: checkpoint='bert-base-uncased' is not a local folder. tsp-mlflow runs offline and never downloads from the Hugging Face Hub",
    ),
    (
        ["pretrain", "--modality", "audio", "--overrides", "runtime.device=gpu"],
        "runtime.device='gpu' is not a device",
    ),
    (["analyze", "--experiment", "nope"], "experiment='nope' not found"),
]


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
    from tsp_mlflow.commands import train

    client = MlflowClient(tracking_uri)
    pending = client.create_run(client.create_experiment("avdigits")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", pending)  # as `mlflow run` leaves it for the entry point

    def interrupted(dataset: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "check_dataset_choice", interrupted)
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


SECRET_OVERRIDES = {
    "+tracking.api_token": "tok-s3cr3t-1",
    "+tracking.db_password": "pw-s3cr3t-2",
    "+tracking.client_secret": "sec-s3cr3t-3",
    "+tracking.access_key": "key-s3cr3t-4",
}
URI_PASSWORD = "uri-s3cr3t-5"


def test_secrets_in_overrides_never_reach_params_tags_or_artifacts(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = " ".join(f"{k}={v}" for k, v in SECRET_OVERRIDES.items())
    overrides += f" +tracking.store=postgresql://alice:{URI_PASSWORD}@db:5432/x debug=tiny"
    main(["pretrain", "--modality", "image", "--epochs", "1", "--overrides", overrides])
    client = MlflowClient(tracking_uri)
    (run,) = runs(client, "")
    assert run.data.params["tracking.api_token"] == "***"
    assert run.data.params["tracking.store"] == "postgresql://***@db:5432/x"
    recorded = json.dumps(run.data.params) + json.dumps(run.data.tags)
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.yaml", "metrics.json", "model.safetensors"}
    for secret in [*SECRET_OVERRIDES.values(), URI_PASSWORD]:
        assert secret not in recorded
        assert not any(secret.encode() in p.read_bytes() for p in files), secret


def test_a_malformed_data_file_fails_before_any_run_with_the_file_named(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.formats import write_avmnist_npy

    root = write_avmnist_npy(tmp_path / "avmnist")
    np.save(root / "audio" / "train_data.npy", np.zeros((40, 112, 100), np.uint8))
    code, err = tsp(
        [
            "pretrain",
            "--dataset",
            "avmnist",
            "--modality",
            "audio",
            "--epochs",
            "1",
            "--overrides",
            f"data.root={root}",
        ],
        capsys,
    )
    assert code == 2
    assert "audio/train_data.npy with shape (N,112,112), found (40, 112, 100)" in err
    client = MlflowClient(tracking_uri)
    assert runs(client, "") == []  # the files are read before the run starts
    assert_nothing_left_behind(client)


# --- The bad-input catalogue ----------------------------------------------------------
# Each case: one line naming the problem and the fix, exit 2, no run created, nothing
# registered, and an existing run and registered model left exactly as they were.


def store_snapshot(client: MlflowClient) -> tuple[object, ...]:
    found = sorted(
        (
            r.info.run_id,
            r.info.status,
            r.info.end_time,
            sorted(r.data.params.items()),
            sorted(r.data.metrics.items()),
            sorted(r.data.tags.items()),
        )
        for r in runs(client, "")
    )
    versions = sorted(
        (v.name, v.version, v.run_id, v.source, v.status)
        for m in client.search_registered_models()
        for v in client.search_model_versions(f"name = '{m.name}'")
    )
    aliases = sorted((m.name, sorted(m.aliases.items())) for m in client.search_registered_models())
    return found, versions, aliases


@pytest.fixture
def existing(tracking_uri: str, tmp_path: Path) -> str:
    """A finished, registered encoder run (@champion) that no bad input may touch."""
    run_id = encoder_run(tmp_path, "audio")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({"optim.lr": "0.001"})
        mlflow.log_metric("val/audio/accuracy", 0.5, step=1)
    client = MlflowClient(tracking_uri)
    name = schema.registered_encoder_name("avdigits", "audio")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/encoder", run_id=run_id)
    client.set_registered_model_alias(name, schema.CHAMPION_ALIAS, version.version)
    return run_id


def mmimdb(tmp_path: Path, damage: str) -> Path:
    """A valid MM-IMDb hdf5 fixture, then one kind of damage."""
    import h5py

    from tests.formats import write_mmimdb_hdf5

    path = write_mmimdb_hdf5(
        tmp_path / "mmimdb" / "multimodal_imdb.hdf5",
        sizes=(10, 0, 4) if damage == "empty split" else (24, 8, 8),
    )
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:4000])
    elif damage != "empty split":
        with h5py.File(path, "a") as f:
            if damage == "wrong shape":
                del f["features"]
                f["features"] = np.zeros((40, 299), np.float32)
            elif damage == "labels out of range":
                f["genres"][2, 5] = 3
            elif damage == "nan":
                f["features"][3, 7] = np.nan
            elif damage == "inf":
                f["features"][5, 0] = np.inf
    return path.parent


CATALOGUE = [
    # config: unknown keys (struct mode), wrong types, out-of-range values
    (
        "unknown key",
        ["multimodal", "--overrides", "trainer.epoch=3"],
        "unknown config key 'trainer.epoch' for multimodal; did you mean trainer.epochs?",
    ),
    (
        "unknown key, pipeline",
        ["pipeline", "--overrides", "optim.lrr=0.1"],
        "unknown config key 'optim.lrr' for multimodal; did you mean optim.lr?",
    ),
    (
        "wrong type",
        ["multimodal", "--overrides", "trainer.batch_size=abc"],
        "trainer.batch_size must be an integer in [1, 1048576], got 'abc'; e.g. trainer.batch_size=32",
    ),
    (
        "wrong type",
        ["pretrain", "--modality", "audio", "--overrides", "optim.lr=fast"],
        "optim.lr must be a positive, finite number, got 'fast'; e.g. optim.lr=1e-3",
    ),
    (
        "wrong type",
        ["pipeline", "--seeds", "many"],
        "seeds must be a positive integer or auto, got 'many'",
    ),
    (
        "missing rate 1.2",
        ["multimodal", "--overrides", "missing.train=1.2"],
        "missing.train: missing rates must lie in [0, 1), got {'audio': 1.2, 'image': 1.2}; e.g. missing.train=0.5",
    ),
    (
        "lr = 0",
        ["multimodal", "--overrides", "optim.lr=0"],
        "optim.lr must be a positive, finite number, got 0",
    ),
    (
        "lr = inf",
        ["multimodal", "--overrides", "optim.lr=inf"],
        "optim.lr must be a positive, finite number, got inf",
    ),
    (
        "lr = null",
        ["multimodal", "--overrides", "optim.lr=null"],
        "optim.lr must be a positive, finite number, got None",
    ),
    (
        "missing rate not a number",
        ["multimodal", "--overrides", "missing.val=abc"],
        "missing.val: a missing rate must be a number in [0, 1), got 'abc'; e.g. missing.val=0.2",
    ),
    (
        "unknown key, no close one",
        ["multimodal", "--overrides", "optim.learning_rate=0.1"],
        "unknown config key 'optim.learning_rate' for multimodal; optim has _partial_, _target_, lr, weight_decay",
    ),
    (
        "lr < 0",
        ["pretrain", "--modality", "image", "--overrides", "optim.lr=-0.001"],
        "optim.lr must be a positive, finite number, got -0.001",
    ),
    (
        "encoder lr < 0",
        ["multimodal", "--overrides", "finetune.lr={image:-1}"],
        "finetune.lr.image must be a positive number, got -1",
    ),
    (
        "seeds < 1",
        ["pipeline", "--seeds", "0"],
        "seeds must be a positive integer or auto, got '0'; e.g. -P seeds=5 (a fixed design) or -P seeds=auto",
    ),
    # adaptive seeds (seeds=auto, the pipeline's default)
    (
        "seeds.min > seeds.max",
        ["pipeline", "--overrides", "seeds.min=8 seeds.max=5"],
        "seeds.min=8 is above seeds.max=5; raise seeds.max or lower seeds.min",
    ),
    (
        "seeds.step = 0",
        ["pipeline", "--overrides", "seeds.step=0"],
        "seeds.step=0 must be a positive number of seeds added per look; e.g. seeds.step=1",
    ),
    (
        "seeds.step < 0",
        ["pipeline", "--seeds", "auto", "--overrides", "seeds.step=-1"],
        "seeds.step=-1 must be a positive number of seeds added per look",
    ),
    (
        "seeds=auto, no direction",
        ["pipeline", "--overrides", "analysis.metrics=[speed]"],
        "seeds=auto needs metrics whose better direction is known; analysis.metrics ['speed'] are not multiclass metrics",
    ),
    (
        "seeds=auto, --skip-test",
        ["--skip-test", "pipeline"],
        "seeds=auto decides from test metrics, which --skip-test does not compute; give a fixed -P seeds=N",
    ),
    (
        "seeds.spending",
        ["pipeline", "--overrides", "seeds.spending=magic"],
        "seeds.spending='magic' is unknown; choose one of pocock, obrien_fleming, linear",
    ),
    (
        "scheduler",
        ["multimodal", "--overrides", "scheduler.factor=2"],
        "scheduler: Factor should be < 1.0.; fix the values under scheduler.*",
    ),
    # related methods (docs/methods.md)
    (
        "unknown gradient",
        ["multimodal", "--overrides", "gradient=pareto"],
        "Could not find 'gradient/pareto'. Valid gradient choices: joint, mmpareto, uniform",
    ),
    (
        "mmpareto gamma",
        ["multimodal", "--overrides", "gradient=mmpareto gradient.gamma=-1"],
        "gradient: gradient.gamma must be a positive number, got -1; fix the values under gradient.*",
    ),
    (
        "predictor size",
        ["multimodal", "--overrides", "imputation=predicted imputation.predictor.hidden=0"],
        "imputation: hidden must be a positive integer, got 0; fix the values under imputation.*",
    ),
    (
        "contrastive, one modality",
        ["pretrain", "--objective", "contrastive", "--modality", "audio"],
        "objective.modalities=['audio']: contrastive pretraining needs at least two of audio, image",
    ),
    (
        "unknown objective",
        ["pretrain", "--objective", "clip"],
        "unknown objective 'clip' (-P objective); choose one of contrastive, supervised",
    ),
    (
        "supervised, no modality",
        ["pretrain"],
        "give the modality to pretrain, e.g. -P modality=audio",
    ),
    (
        "grid gradients",
        ["pipeline", "--overrides", "grid.gradients=[pareto]"],
        "pipeline grid: grid.gradients=['pareto']: choose from joint, mmpareto, uniform",
    ),
    (
        "grid block key",
        ["pipeline", "--overrides", "grid=methods grid.blocks=[{fusion:[sum]}]"],
        "grid.blocks: unknown key(s) ['fusion']; a block sets some of conditions, fusions",
    ),
    (
        "pipeline gradient",
        ["pipeline", "--overrides", "gradient=mmpareto"],
        "the pipeline sets gradient per grid cell; use grid.fusions=[...], grid.missing=[...], grid.gradients=[...]",
    ),
    (
        "pipeline objective",
        ["pipeline", "--overrides", "objective=contrastive"],
        "the pipeline picks each pretraining's objective itself; add contrastive to grid.conditions",
    ),
    (
        "objective keys without contrastive cells",
        ["pipeline", "--overrides", "objective.dim=32"],
        "overrides ['objective.dim=32'] configure contrastive pretraining, which this grid does not run",
    ),
    (
        "sweep contrastive",
        ["sweep", "--overrides", "sweep.conditions=[contrastive]"],
        "sweep.conditions: contrastive is not supported in sweeps",
    ),
    (
        "no contrastive encoders",
        ["multimodal", "--encoders", "contrastive"],
        "registered model 'avdigits-audio-contrastive-encoder'",
    ),
    # encoder sources
    (
        "no such run",
        ["multimodal", "--encoders", "audio=run:0123abcd"],
        "encoder run '0123abcd' (from 'run:0123abcd') does not exist",
    ),
    (
        "misspelt model",
        ["multimodal", "--encoders", "audio=models:/avdigits-audio-encodr@champion"],
        "registered model 'avdigits-audio-encodr'",
    ),
    (
        "missing alias",
        ["multimodal", "--encoders", "audio=models:/avdigits-audio-encoder@best"],
        "'models:/avdigits-audio-encoder@best' does not exist: model 'avdigits-audio-encoder' has aliases ['champion']",
    ),
]
DAMAGE = ["missing", "truncated", "wrong shape", "labels out of range", "nan", "inf", "empty split"]
DAMAGE_MESSAGES = {
    "missing": "expected multimodal_imdb.hdf5 (Arevalo's MM-IMDb release) under the data root",
    "truncated": "is not an HDF5 file",
    "wrong shape": "['features'] with shape (N,300), found (40, 299)",
    "labels out of range": "['genres'] must be multi-hot 0/1; labels out of range: [3]",
    "nan": "['features'] holds 1 NaN/inf values in 1 rows (first rows: [3])",
    "inf": "['features'] holds 1 NaN/inf values in 1 rows (first rows: [5])",
    "empty split": "the val split of",
}


@pytest.mark.parametrize(("case", "args", "message"), CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_the_bad_input_catalogue(
    case: str,
    args: list[str],
    message: str,
    existing: str,
    tracking_uri: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = MlflowClient(tracking_uri)
    before = store_snapshot(client)
    code, err = tsp(args, capsys)
    assert code == 2 and message in err, err
    assert store_snapshot(client) == before  # no new run, no new version, nothing altered


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_dataset_files_fail_before_any_run(
    damage: str,
    existing: str,
    tracking_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = mmimdb(tmp_path, damage)
    client = MlflowClient(tracking_uri)
    before = store_snapshot(client)
    code, err = tsp(
        [
            "pretrain",
            "--dataset",
            "mmimdb",
            "--modality",
            "text",
            "--epochs",
            "1",
            "--overrides",
            f"data.root={root}",
        ],
        capsys,
    )
    assert code == 2 and DAMAGE_MESSAGES[damage] in err, err
    assert "multimodal_imdb.hdf5" in err  # the file is named
    assert store_snapshot(client) == before


def tampered_encoder_run(tmp_path: Path, modality: str, name: str, content: bytes) -> str:
    """An encoder run on the tracking store whose ``encoder/<name>`` was replaced, as
    anyone with write access to the server could do."""
    run_id = encoder_run(tmp_path / "tampered", modality)
    folder = Path(MlflowClient().download_artifacts(run_id, "encoder", str(tmp_path / "dl")))
    (folder / name).write_bytes(content)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(folder / name), schema.ENCODER_ARTIFACT_DIR)
    return run_id


def test_a_corrupted_encoder_file_is_named_and_nothing_runs(
    existing: str, tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tampered_encoder_run(tmp_path, "image", "model.safetensors", b"\x00garbage" * 64)
    client = MlflowClient(tracking_uri)
    before = store_snapshot(client)
    code, err = tsp(["multimodal", "--encoders", f"image=run:{broken}"], capsys)
    assert code == 2
    assert "model.safetensors is not a readable safetensors file" in err
    assert "pretrain the encoder again or pick another version" in err
    # the artifact where it lives, not the temporary copy deleted by then
    artifact = client.get_run(broken).info.artifact_uri
    assert f"{artifact}/encoder/model.safetensors" in err and "tsp-encoder-" not in err
    assert store_snapshot(client) == before


def test_a_malicious_encoder_config_is_refused_and_never_run(
    existing: str, tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An encoder.json on the server that names os.system: refused, never executed."""
    marker = tmp_path / "pwned"
    spec = {"format": 1, "_target_": "os.system", "kwargs": {"command": f"touch {marker}"}}
    evil = tampered_encoder_run(tmp_path, "audio", "encoder.json", json.dumps(spec).encode())
    client = MlflowClient(tracking_uri)
    before = store_snapshot(client)
    code, err = tsp(["multimodal", "--encoders", f"audio=run:{evil}"], capsys)
    assert code == 2 and "refusing to build 'os.system' named by an encoder artifact" in err
    assert not marker.exists()
    assert store_snapshot(client) == before


def test_a_diverging_loss_fails_the_run_with_its_step_and_registers_nothing(
    existing: str, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri)
    versions = store_snapshot(client)[1]
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "pretrain",
                "--modality",
                "image",
                "--epochs",
                "2",
                "--overrides",
                "optim.lr=1e30 debug=tiny trainer.epochs=2",
            ]
        )
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tsp: error: the training loss is nan at epoch 1, step ")
    assert "lower optim.lr" in err
    (failed,) = runs(client, f"tags.`{schema.STAGE}` = 'pretrain' and attributes.status = 'FAILED'")
    assert failed.data.tags[schema.ERROR].startswith(
        "TrainingDiverged: the training loss is nan at epoch 1, step "
    )
    assert store_snapshot(client)[1] == versions  # nothing registered
    assert client.get_run(existing).info.status == "FINISHED"


def test_a_run_without_an_encoder_is_named_as_such(
    existing: str, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri)
    before = store_snapshot(client)
    code, err = tsp(["multimodal", "--encoders", f"audio=runs:/{existing}/nothere"], capsys)
    assert code == 2 and f"run {existing} has no encoder at" in err
    assert "name a pretrain run (run:<id>) or a registered encoder" in err
    assert store_snapshot(client) == before


def test_scale_out_misuse_fails_before_anything_starts(
    tracking_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver mix-up, basic-auth without an admin password, and torchrun launching a
    command that runs in one process: one line each, before any server, database or run."""
    code, err = tsp(
        [
            "server",
            "--backend-store-uri",
            "postgresql://me@db.lab/mlflow",
            "--folder",
            str(tmp_path / "s"),
        ],
        capsys,
    )
    assert (
        code == 2 and "postgresql://... means psycopg 3" in err and "postgresql+psycopg2://" in err
    )
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    code, err = tsp(["server", "--auth", "--folder", str(tmp_path / "s")], capsys)
    assert code == 2 and "--auth needs the admin's password in MLFLOW_AUTH_ADMIN_PASSWORD" in err
    assert not (tmp_path / "s" / "postgres").exists()  # no cluster was created

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets for each of its processes
    monkeypatch.setenv("RANK", "0")
    for command in ("pipeline", "sweep", "analyze"):
        code, err = tsp([command], capsys)
        assert (
            code == 2
            and f"tsp {command} runs in one process; torchrun launches pretrain and multimodal"
            in err
        )
    assert runs(MlflowClient(tracking_uri), "") == []


LONG = "d" * 5000
# The fault-injection campaign's bad inputs (issue 22): environment, store and values.
# (case, environment, arguments, the one line's content). Each must be one line with the
# fix, within seconds, leaving the store as it was.
ENVIRONMENT_CATALOGUE = [
    (
        "store under /proc",
        {"MLFLOW_TRACKING_URI": "sqlite:////proc/mlflow.db"},
        ["pretrain", "--modality", "image"],
        "MLFLOW_TRACKING_URI='sqlite:////proc/mlflow.db': cannot write there",
    ),
    (
        "store folder missing",
        {"MLFLOW_TRACKING_URI": "sqlite:////nonexistent-tsp/mlflow.db"},
        ["pretrain", "--modality", "image"],
        "folder /nonexistent-tsp does not exist; create it, or point MLFLOW_TRACKING_URI at a writable place",
    ),
    (
        "store is a folder",
        {"MLFLOW_TRACKING_URI": "sqlite:////tmp"},
        ["pretrain", "--modality", "image"],
        "MLFLOW_TRACKING_URI='sqlite:////tmp': /tmp is a folder, not a file",
    ),
    (
        "garbage URI scheme",
        {"MLFLOW_TRACKING_URI": "garbage://x/y"},
        ["pretrain", "--modality", "image"],
        "MLFLOW_TRACKING_URI='garbage://x/y': 'garbage' is not a tracking store MLflow knows",
    ),
    (
        "store path too long",
        {"MLFLOW_TRACKING_URI": f"sqlite:////tmp/{LONG}/m.db"},
        ["pretrain", "--modality", "image"],
        "the path is too long; point MLFLOW_TRACKING_URI at a writable place",
    ),
    (
        "TSP_DATA_DIR not UTF-8",
        {"TSP_DATA_DIR": "/tmp/tsp-\udcff\udcfe"},
        ["pretrain", "--modality", "image"],
        "is not valid UTF-8 (it is recorded in run tags and params); use a UTF-8 path",
    ),
    (
        "TSP_DATA_DIR is a file",
        {"TSP_DATA_DIR": "<file>"},
        ["pretrain", "--modality", "image"],
        "is a file, not a folder; point it at a folder",
    ),
    (
        "TSP_HEARTBEAT_S=abc",
        {"TSP_HEARTBEAT_S": "abc"},
        ["pretrain", "--modality", "image"],
        "TSP_HEARTBEAT_S='abc' must be a number of seconds in [1, 3600]",
    ),
    (
        "TSP_HEARTBEAT_S=0",
        {"TSP_HEARTBEAT_S": "0"},
        ["pretrain", "--modality", "image"],
        "TSP_HEARTBEAT_S='0' must be a number of seconds in [1, 3600]",
    ),
    (
        "very long cache_dir",
        {},
        ["pretrain", "--modality", "image", "--overrides", f"data.dataset.cache_dir=/tmp/{LONG}"],
        "cannot hold the built-in dataset (File name too long); set TSP_DATA_DIR",
    ),
    (
        "seed 2**70",
        {},
        ["pretrain", "--modality", "image", "--seed", str(2**70)],
        "Invalid value for '--seed': 1180591620717411303424 is not in the range 0<=x<=4294967295",
    ),
    (
        "seed override 2**70",
        {},
        ["pretrain", "--modality", "image", "--overrides", f"seed={2**70}"],
        "seed must be an integer in [0, 2^32), got 1180591620717411303424",
    ),
    (
        "override =3",
        {},
        ["pretrain", "--modality", "image", "--overrides", "=3"],
        "override '=3' is not key=value; write e.g. trainer.epochs=3",
    ),
    (
        "9,000-character experiment",
        {},
        ["pretrain", "--modality", "image", "--overrides", f"tracking.experiment={'e' * 9000}"],
        "experiment name of 9000 characters ('eeee",
    ),
    (
        "batch size 1e12",
        {},
        ["pretrain", "--modality", "image", "--overrides", "trainer.batch_size=1e12"],
        "trainer.batch_size must be an integer in [1, 1048576], got 1000000000000.0",
    ),
    (
        "resume, malformed id",
        {},
        ["pretrain", "--modality", "image", "--resume", "not a run!"],
        "resume='not a run!' is not an MLflow run id (32 hexadecimal characters)",
    ),
    (
        "stale-after nan",
        {},
        ["runs", "reap", "--stale-after", "nan"],
        "--stale-after must be a number of seconds >= 0, got nan",
    ),
    (
        "server without the postgres extra",
        {"<no psycopg2>": "1"},
        ["server"],
        "tsp server keeps its runs in PostgreSQL, whose driver psycopg2 is not installed: pip install -e '.[postgres]'",
    ),
    (
        "data.root is a file",
        {},
        [
            "pretrain",
            "--dataset",
            "mmimdb",
            "--modality",
            "text",
            "--overrides",
            "data.root=<file>",
        ],
        "is not an HDF5 file, or a truncated one",
    ),
]


@pytest.mark.parametrize(
    ("case", "env", "args", "message"),
    ENVIRONMENT_CATALOGUE,
    ids=[c[0] for c in ENVIRONMENT_CATALOGUE],
)
def test_the_environment_and_store_catalogue(
    case: str,
    env: dict[str, str],
    args: list[str],
    message: str,
    existing: str,
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tsp_mlflow.tracking import lab_server as serve

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder, not a dataset")
    for key, value in env.items():
        if key == "<no psycopg2>":
            real = serve.importlib.util.find_spec
            monkeypatch.setattr(
                serve.importlib.util,
                "find_spec",
                lambda name, real=real: None if name.startswith("psycopg") else real(name),
            )
        else:
            monkeypatch.setenv(key, value.replace("<file>", str(a_file)))
    args = [a.replace("<file>", str(a_file)) for a in args]
    client = MlflowClient(tracking_uri)
    before = store_snapshot(client)
    experiments = sorted(e.name for e in client.search_experiments())
    code, err = tsp(args, capsys)
    assert code == 2 and message in err, err
    monkeypatch.undo()
    mlflow.set_tracking_uri(tracking_uri)
    assert store_snapshot(client) == before  # no run created, nothing altered
    assert sorted(e.name for e in client.search_experiments()) == experiments  # none left empty
