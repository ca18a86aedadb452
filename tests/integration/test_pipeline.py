"""Acceptance: `mlflow run . -e pipeline` into a fresh sqlite store builds the linked tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

import tsp_mlflow
from tests.integration.browser import check_experiment_page, tsp_ui
from tests.integration.flow import REPO, check_pipeline_tree, children, mlflow_run, runs
from tsp_mlflow.cli import main
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration
SEEDS, EPOCHS = 2, 2


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- snippet: load-encoders -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its load-encoders snippet"
    return match.group(1)


# Non-TTY progress: one line per epoch of each training run (the pipe here, CI logs).
EPOCH_LINE = re.compile(
    r"^(?P<run>[\w-]+) epoch (?P<epoch>\d+)/(?P<of>\d+): train loss \d+\.\d{4}, "
    r"val/[\w-]+/\w+ \d\.\d{4} \(best \d\.\d{4} @ \d+\), \d+\.\d s, ETA \d+ s$"
)


def check_epoch_lines(stdout: str, run_names: list[str], epochs: int) -> None:
    assert "\r" not in stdout and "\x1b" not in stdout  # no bar redraws, no colour codes
    lines = [m.groupdict() for line in stdout.splitlines() if (m := EPOCH_LINE.match(line))]
    assert sorted(m["run"] for m in lines) == sorted(n for n in run_names for _ in range(epochs))
    for name in run_names:
        assert [int(m["epoch"]) for m in lines if m["run"] == name] == list(range(1, epochs + 1))
    assert {m["of"] for m in lines} == {str(epochs)}
    cells = re.findall(r"^\[(\d+)/(\d+)\] multimodal .*: run [0-9a-f]{32}$", stdout, re.M)
    assert [int(i) for i, _ in cells] == list(range(1, 2 * SEEDS + 1))


def test_pipeline_via_mlflow_run(
    subprocess_env: dict[str, str],
    tracking_uri: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Narrow encoders: this test is about the project run and its tree, not the encoders.
    params = {
        "seeds": SEEDS,
        "epochs": EPOCHS,
        "overrides": "debug=tiny model.encoders.audio.width=4 model.encoders.image.width=4",
    }
    first = mlflow_run("pipeline", params, subprocess_env)
    assert first.returncode == 0, first.stderr[-4000:]
    assert "| pattern | metric | n | pretrained mean ± sd | scratch mean ± sd |" in first.stdout
    assert "- **audio-image · accuracy**: " in first.stdout  # the verdicts
    assert "Browse the runs:  tsp ui" in first.stdout

    client = MlflowClient(tracking_uri)
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    check_pipeline_tree(client, parent, seeds=SEEDS, epochs=EPOCHS, trained=True)
    kids = children(client, parent.info.run_id)
    trained = [r.info.run_name for r in kids if r.data.tags[schema.STAGE] != "analysis"]
    check_epoch_lines(first.stdout, trained, EPOCHS)

    # Browsing it: `tsp ui` on this store, in a real (headless) browser.
    (analysis,) = [r for r in kids if r.data.tags[schema.STAGE] == "analysis"]
    with tsp_ui(tracking_uri, tmp_path, subprocess_env) as url:
        check_experiment_page(
            url,
            parent.info.experiment_id,
            (parent.info.run_id, parent.info.run_name),
            [r.info.run_name for r in kids],
            [
                (parent.info.run_id, schema.HEADLINE_FIGURE),
                (analysis.info.run_id, schema.ANALYSIS_FOREST_FIGURE),
            ],
            screenshot=tmp_path / "ui",
        )

    # The registry: champion resolves and loads as a trainable module, weights intact.
    for m, side in (("audio", 112), ("image", 28)):
        encoder = tsp_mlflow.load_encoder(f"models:/avdigits-{m}-encoder@champion")
        same = tsp_mlflow.load_encoder(f"run:{parent.data.tags[schema.pipeline_pretrain_tag(m)]}")
        for a, b in zip(encoder.state_dict().values(), same.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        assert encoder.training and encoder(torch.rand(2, 1, side, side)).shape == (
            2,
            encoder.out_dim,
        )

    # The README's "new fusion model from two registered encoders" snippet runs as written.
    namespace: dict[str, object] = {}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["logits"].shape == (4, 10)

    # A second identical invocation trains no new encoder.
    pretrain_before = {r.info.run_id for r in runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")}
    second = mlflow_run("pipeline", params, subprocess_env)
    assert second.returncode == 0, second.stderr[-4000:]
    pretrain_after = {r.info.run_id for r in runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")}
    assert pretrain_after == pretrain_before and len(pretrain_before) == 2
    newest = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")[0]
    assert newest.info.run_id != parent.info.run_id
    assert newest.data.tags[schema.pipeline_reused_tag("audio")] == "true"
    check_pipeline_tree(client, newest, seeds=SEEDS, epochs=EPOCHS, trained=False)
    assert len(client.search_model_versions("name = 'avdigits-audio-encoder'")) == 1

    # `analyze` on its own: one pipeline's children, or a whole experiment.
    main(["analyze", "--parent-run", parent.info.run_id])
    out = capsys.readouterr().out
    assert f"| audio-image | accuracy | {SEEDS} |" in out and "repeated an (arm, seed)" not in out
    main(["analyze", "--experiment", parent.info.experiment_id, "--metric", "f1_macro"])  # by id
    out = capsys.readouterr().out  # two pipelines: each (arm, seed) twice, averaged
    assert f"| audio-image | f1_macro | {SEEDS} |" in out and "| accuracy |" not in out
    assert f"{2 * SEEDS} runs repeated an (arm, seed) pair and were averaged" in out
    standalone = [
        r
        for r in runs(client, f"tags.`{schema.STAGE}` = 'analysis'")
        if schema.PARENT_RUN_ID not in r.data.tags
    ]
    assert len(standalone) == 2 and {r.info.experiment_id for r in standalone} == {
        parent.info.experiment_id
    }


def test_pretrain_and_multimodal_entry_points_compose(
    subprocess_env: dict[str, str], tracking_uri: str
) -> None:
    pre = mlflow_run("pretrain", {"modality": "image", "epochs": 1}, subprocess_env)
    assert pre.returncode == 0, pre.stderr[-4000:]
    fused = mlflow_run(
        "multimodal",
        {"encoders": "image=pretrained", "epochs": 1, "seed": 3},
        subprocess_env,
    )
    assert fused.returncode == 0, fused.stderr[-4000:]
    client = MlflowClient(tracking_uri)
    (run,) = runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")
    (image_run,) = runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")
    assert run.data.tags[schema.CONDITION] == "audio_scratch"
    assert (
        run.data.tags[schema.encoder_source_tag("image")]
        == "models:/avdigits-image-encoder@champion"
    )
    assert run.data.tags[schema.encoder_run_tag("image")] == image_run.info.run_id
    assert run.data.tags[schema.SEED] == "3" and run.data.tags[schema.FUSION] == "concat"
    mv = client.get_model_version_by_alias("avdigits-image-encoder", "champion")
    assert mv.run_id == image_run.info.run_id
    assert (
        Path(client.download_artifacts(run.info.run_id, "config.yaml"))
        .read_text()
        .count("SmallCNN")
        == 2
    )
