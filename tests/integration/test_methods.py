"""Acceptance: the related methods (gradient strategies, predicted missing embeddings,
contrastive pretraining) run next to the baseline from one pipeline command, are tracked
per cell, and the closing analysis compares them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.integration.flow import artifact_paths, children, runs
from tsp_mlflow.api import load_encoder
from tsp_mlflow.cli import main
from tsp_mlflow.errors import EncoderNotFound
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration
NARROW = "model.encoders.audio.width=4 model.encoders.image.width=4"


def test_methods_grid_tracks_every_method_and_the_analysis_compares_them(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(
        [
            "pipeline",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--overrides",
            f"grid=methods debug=tiny {NARROW}",
        ]
    )
    client = MlflowClient(tracking_uri)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    kids = children(client, parent.info.run_id)
    assert all(r.info.status == "FINISHED" for r in kids)
    fusion = [r for r in kids if r.data.tags[schema.STAGE] == "multimodal"]
    pretrain = [r for r in kids if r.data.tags[schema.STAGE] == "pretrain"]

    def cell(run) -> tuple[str, str, str, str, str]:  # noqa: ANN001
        t = run.data.tags
        return (
            t[schema.CONDITION],
            t[schema.GRADIENT],
            t[schema.missing_tag("test")],
            t[schema.IMPUTATION],
            t[schema.SEED],
        )

    expected = (
        {
            (c, g, "0", "none", s)
            for c in ("scratch", "pretrained")
            for g in ("joint", "uniform", "mmpareto")
            for s in "01"
        }
        | {("pretrained", "joint", "0.5", i, s) for i in ("none", "predicted") for s in "01"}
        | {("contrastive", "joint", "0", "none", s) for s in "01"}
    )
    assert sorted(map(cell, fusion)) == sorted(expected)  # each cell exactly once

    # Pretraining: one supervised run per modality and one contrastive run for both.
    objectives = sorted(r.data.tags[schema.OBJECTIVE] for r in pretrain)
    assert objectives == ["contrastive", "supervised", "supervised"]
    (contrastive,) = [r for r in pretrain if r.data.tags[schema.OBJECTIVE] == "contrastive"]
    assert parent.data.tags[schema.pipeline_contrastive_tag()] == contrastive.info.run_id
    for direction in ("audio_to_image", "image_to_audio"):
        for k in (1, 5, 10):
            value = contrastive.data.metrics[f"val/audio-image/{direction}_recall_at_{k}"]
            assert 0 <= value <= 1
    assert {"encoder/audio/model.safetensors", "encoder/image/model.safetensors"} <= (
        artifact_paths(client, contrastive.info.run_id)
    )
    for m in ("audio", "image"):  # registered like supervised encoders, and loadable
        name = schema.registered_encoder_name("avdigits", m, "contrastive")
        champion = client.get_model_version_by_alias(name, schema.CHAMPION_ALIAS)
        assert champion.run_id == contrastive.info.run_id
        assert load_encoder(f"models:/{name}@champion").out_dim > 0
    with pytest.raises(
        EncoderNotFound, match="holding encoders for audio, image; name one: runs:/"
    ):
        load_encoder(f"run:{contrastive.info.run_id}")  # two encoders: which one?

    for run in fusion:
        tags, metrics = run.data.tags, run.data.metrics
        gradient = tags[schema.GRADIENT]
        if tags[schema.CONDITION] == "contrastive":
            assert all(
                tags[schema.encoder_run_tag(m)] == contrastive.info.run_id
                for m in ("audio", "image")
            )
        # Unimodal heads exist (and have losses) exactly when the strategy uses them.
        assert ("train/loss_audio" in metrics) == (gradient != "joint")
        assert ("params/unimodal_heads" in metrics) == (gradient != "joint")
        if gradient == "mmpareto":  # per-encoder cosine and weights, every epoch
            for m in ("audio", "image"):
                history = client.get_metric_history(run.info.run_id, f"gradient/{m}/cosine")
                assert [p.step for p in history] == [1, 2]
                assert all(-1 <= p.value <= 1 for p in history)
                w = (
                    metrics[f"gradient/{m}/weight_multimodal"]
                    + metrics[f"gradient/{m}/weight_unimodal"]
                )
                assert w == pytest.approx(1)
        else:
            assert not any(k.startswith("gradient/") for k in metrics)
        predicted = tags[schema.IMPUTATION] == "predicted"
        assert ("params/predictor" in metrics) == predicted
        assert ("train/predictor_vicreg" in metrics) == predicted
        # Missing rate 0.5: the split's own masks are evaluated too (pattern "observed").
        assert ("test/observed/accuracy" in metrics) == (tags[schema.missing_tag("test")] == "0.5")

    # Predicted embeddings change the single-modality patterns (zero-fill vs a prediction)
    # but a model that sees every modality predicts nothing.
    by_cell = {cell(r): r.data.metrics for r in fusion}
    zero = by_cell[("pretrained", "joint", "0.5", "none", "0")]
    pred = by_cell[("pretrained", "joint", "0.5", "predicted", "0")]
    assert zero["test/audio/loss"] != pred["test/audio/loss"]

    (analysis,) = [r for r in kids if r.data.tags[schema.STAGE] == "analysis"]
    files = artifact_paths(client, analysis.info.run_id)
    assert {
        "analysis/tables/gradients_omnibus.csv",
        "analysis/tables/gradients_pairwise.csv",
        "analysis/figures/cd_gradients.png",
        "analysis/tables/imputations.csv",
        "analysis/tables/objectives.csv",
    } <= files
    pairwise = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, "analysis/tables/gradients_pairwise.csv")
    )
    assert {frozenset(p) for p in zip(pairwise["a"], pairwise["b"], strict=True)} == {
        frozenset(p) for p in (("joint", "uniform"), ("joint", "mmpareto"), ("uniform", "mmpareto"))
    }
    assert set(pairwise["condition"]) == {"scratch", "pretrained"}
    imputations = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, "analysis/tables/imputations.csv")
    )
    assert set(zip(imputations["a"], imputations["b"], strict=True)) == {("predicted", "none")}
    assert set(imputations["missing"].astype(str)) == {"0.5"}
    assert (imputations["n_pairs"] == 2).all()  # paired by seed
    objectives_table = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, "analysis/tables/objectives.csv")
    )
    assert set(zip(objectives_table["a"], objectives_table["b"], strict=True)) == {
        ("contrastive", "pretrained")
    }
    comparison = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, schema.ANALYSIS_COMPARISON_CSV)
    )
    # Pretrained vs scratch within each gradient strategy (the cells that run both).
    assert set(comparison["gradient"]) == {"joint", "uniform", "mmpareto"}
    # Runs in cells that only one arm runs (block 2: missing 0.5) stay out of every
    # pretrained-vs-scratch quantity, cost and convergence included.
    cost = pd.read_csv(client.download_artifacts(analysis.info.run_id, "analysis/tables/cost.csv"))
    half = {r.info.run_id for r in fusion if r.data.tags[schema.missing_tag("test")] == "0.5"}
    assert not half & set(cost["run_id"]) and len(cost) == len(fusion) - len(half)
    report = Path(client.download_artifacts(analysis.info.run_id, "analysis/report.md")).read_text()
    for title in (
        "## Gradient strategies: joint vs uniform vs MMPareto",
        "## Missing embeddings: predicted (VICReg) vs the fusion's rule (zero-fill)",
        "## Pretraining objective: contrastive vs supervised",
    ):
        assert title in report
    out = capsys.readouterr().out
    assert "multimodal concat pretrained missing 0.5 predicted seed 1: run" in out
