"""Acceptance: the thesis's experiment grids run as one command each, fully tracked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from tests.integration.flow import artifact_paths, children, runs
from tsp_mlflow.cli import main
from tsp_mlflow.config import config_dir
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration
# The fusions of grid=fusions, read from its config: a new fusion method added there
# widens this test without an edit here.
FUSIONS = list(OmegaConf.load(config_dir() / "grid" / "fusions.yaml").fusions)


# Narrow encoders: these tests are about the grid, not the encoders' size.
NARROW = "model.encoders.audio.width=4 model.encoders.image.width=4"


def pipeline(*args: str, seeds: int = 2) -> None:
    main(["pipeline", "--seeds", str(seeds), "--epochs", "1", *args])


def fusion_children(client: MlflowClient, parent_id: str) -> list:
    return [r for r in children(client, parent_id) if r.data.tags[schema.STAGE] == "multimodal"]


def test_six_fusion_methods_by_two_conditions_by_two_seeds(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline("--overrides", f"grid=fusions debug=tiny representations=true {NARROW}")
    client = MlflowClient(tracking_uri)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    kids = children(client, parent.info.run_id)
    stages = sorted(r.data.tags[schema.STAGE] for r in kids)
    assert stages == ["analysis"] + ["multimodal"] * (len(FUSIONS) * 2 * 2) + ["pretrain"] * 2
    assert all(r.info.status == "FINISHED" for r in kids)
    cells = {
        (r.data.tags[schema.FUSION], r.data.tags[schema.CONDITION], r.data.tags[schema.SEED])
        for r in fusion_children(client, parent.info.run_id)
    }
    assert cells == {(f, c, s) for f in FUSIONS for c in ("scratch", "pretrained") for s in "01"}
    encoders = {m: parent.data.tags[schema.pipeline_pretrain_tag(m)] for m in ("audio", "image")}
    for run in fusion_children(client, parent.info.run_id):
        if run.data.tags[schema.CONDITION] == "pretrained":  # every cell reuses the two encoders
            assert all(
                run.data.tags[schema.encoder_run_tag(m)] == rid for m, rid in encoders.items()
            )
        metrics = run.data.metrics
        assert metrics["params/total"] > 0 and metrics["time/test_batch_ms"] > 0
        assert (
            0 <= metrics["probe/audio/accuracy"] <= 1 and 0 <= metrics["probe/image/accuracy"] <= 1
        )
        assert {
            "representations/audio.npy",
            "representations/image.npy",
            "representations/targets.npy",
        } <= artifact_paths(client, run.info.run_id)
        assert ("params/fusion" in metrics) and (metrics["params/fusion"] == 0) == (
            run.data.tags[schema.FUSION] == "concat"
        )

    (analysis,) = [r for r in kids if r.data.tags[schema.STAGE] == "analysis"]
    files = artifact_paths(client, analysis.info.run_id)
    assert {
        "analysis/figures/cd_fusions.png",
        "analysis/tables/fusions_ranks.csv",
        "analysis/tables/fusions_omnibus.csv",
        "analysis/figures/representations.png",
        "analysis/tables/probes.csv",
    } <= files
    ranks = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, "analysis/tables/fusions_ranks.csv")
    )
    assert set(ranks.columns) >= {"condition", "pattern", "metric"} and set(ranks["fusion"]) == set(
        FUSIONS
    )
    report = Path(client.download_artifacts(analysis.info.run_id, "analysis/report.md")).read_text()
    assert "## Across fusion methods" in report and "## Efficiency per fusion method" in report
    assert "| probe/image/accuracy |" in report
    comparison = pd.read_csv(
        client.download_artifacts(analysis.info.run_id, schema.ANALYSIS_COMPARISON_CSV)
    )
    assert set(comparison["fusion"]) == set(FUSIONS)  # pretrained vs scratch within each method
    assert "| gated | audio-image | accuracy | 2 |" in capsys.readouterr().out


def test_missing_rate_grid_with_one_modality_from_scratch(tracking_uri: str) -> None:
    with pytest.raises(SystemExit):  # the default analysis needs a scratch arm: fail first
        pipeline("--overrides", "grid=missing grid.conditions=[audio_scratch,pretrained]")
    assert runs(MlflowClient(tracking_uri), "") == []
    pipeline(
        "--overrides",
        "grid=missing grid.conditions=[audio_scratch,pretrained] "
        f"analysis.b=audio_scratch debug=tiny {NARROW}",
    )
    client = MlflowClient(tracking_uri)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    cells = fusion_children(client, parent.info.run_id)
    assert len(cells) == 2 * 2 * 2  # rates x conditions x seeds
    image_run = parent.data.tags[schema.pipeline_pretrain_tag("image")]
    seen = set()
    for run in cells:
        tags, metrics = run.data.tags, run.data.metrics
        rate = tags[schema.missing_tag("train")]
        assert rate in ("0.2", "0.9")
        assert tags[schema.missing_tag("val")] == tags[schema.missing_tag("test")] == rate
        assert run.data.params["missing.train"] == rate
        seen.add((rate, tags[schema.CONDITION], tags[schema.SEED]))
        if tags[schema.CONDITION] == "audio_scratch":
            assert tags[schema.encoder_source_tag("audio")] == "scratch"
            assert schema.encoder_run_tag("audio") not in tags
        assert tags[schema.encoder_run_tag("image")] == image_run
        for split in ("val", "test"):  # the split's own masks, and every pattern on complete data
            for pattern in ("observed", "audio-image", "audio", "image"):
                assert f"{split}/{pattern}/accuracy" in metrics
    assert seen == {
        (r, c, s) for r in ("0.2", "0.9") for c in ("audio_scratch", "pretrained") for s in "01"
    }
    (analysis,) = [
        r for r in children(client, parent.info.run_id) if r.data.tags[schema.STAGE] == "analysis"
    ]
    report = Path(client.download_artifacts(analysis.info.run_id, "analysis/report.md")).read_text()
    assert "## Across missing rates" in report and "missing 0.2 vs 0.9 (Δ = 0.2 − 0.9" in report
    assert "| audio_scratch | audio-image | accuracy | 2 |" in report  # per condition


def test_a_stopped_grid_resumes_without_redoing_finished_cells(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--overrides", f"grid.fusions=[concat,sum] debug=tiny {NARROW}")
    pipeline(*args, seeds=1)
    client = MlflowClient(tracking_uri)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    cells = fusion_children(client, parent.info.run_id)
    broken = next(r for r in cells if r.data.tags[schema.FUSION] == "sum")
    client.set_terminated(broken.info.run_id, "FAILED")  # as if the machine had died there
    client.set_terminated(parent.info.run_id, "FAILED")
    capsys.readouterr()

    pipeline(*args, "--resume", parent.info.run_id, seeds=1)
    out = capsys.readouterr().out
    assert out.count("finished earlier") == len(cells) - 1
    after = fusion_children(client, parent.info.run_id)
    assert len(after) == len(cells) + 1  # exactly the one broken cell ran again
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert len(runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")) == 2  # encoders reused

    with pytest.raises(SystemExit):
        pipeline(
            "--overrides",
            "grid.fusions=[concat] debug=tiny",
            "--resume",
            parent.info.run_id,
            seeds=1,
        )
    err = capsys.readouterr().err
    assert "was started with other settings (" in err and "pipeline.overrides: run has" in err


def test_the_same_grid_runs_through_hydra_multirun(
    subprocess_env: dict[str, str], tracking_uri: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "tsp_mlflow.multirun",
        "-m",
        "model/fusion=concat,gated",
        "seed=0,1",
        "experiment=missing_20",
        "debug=tiny",
        "trainer.batch_size=512",
        *NARROW.split(),
        f"hydra.sweep.dir={tmp_path / 'mr'}",
    ]
    done = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    found = runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")
    assert all(r.info.status == "FINISHED" for r in found)
    cells = {
        (
            r.data.tags[schema.FUSION],
            r.data.tags[schema.SEED],
            r.data.tags[schema.missing_tag("test")],
            r.data.tags[schema.CONDITION],
        )
        for r in found
    }
    assert cells == {(f, s, "0.2", "scratch") for f in ("concat", "gated") for s in "01"}
    assert all(
        r.data.params["model.fusion._target_"].endswith(
            "GatedFusion" if r.data.tags[schema.FUSION] == "gated" else "ConcatFusion"
        )
        for r in found
    )
    # One parent per multirun, every job under it with its number and overrides.
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = '{schema.STAGE_MULTIRUN}'")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags[schema.PARENT_RUN_ID] for r in found} == {parent.info.run_id}
    assert sorted(r.data.tags[schema.MULTIRUN_JOB] for r in found) == ["0", "1", "2", "3"]
    for r in found:
        assert (
            f"model/fusion={r.data.tags[schema.FUSION]}" in r.data.tags[schema.MULTIRUN_OVERRIDES]
        )
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsp_mlflow.multirun",
            "-m",
            "encoders=run:nope",
            f"hydra.sweep.dir={tmp_path / 'bad'}",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "tsp: error: " in bad.stderr
    # The failed job's multirun parent is not left RUNNING.
    (failed,) = runs(client, f"tags.`{schema.STAGE}` = 'multirun' and attributes.status = 'FAILED'")
    assert failed.data.tags[schema.ERROR]
