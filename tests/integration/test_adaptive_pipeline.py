"""seeds=auto on the real pipeline: looks as analysis children, the parent's record of
them, a SIGKILL between looks resumed like a fixed grid, and grids that stop per stratum."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from tests.integration.flow import children, runs
from tests.integration.test_resume import tsp_process, wait_for
from tsp_mlflow.cli import main
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration
# Narrow, fast models; rope 0 and no futility: nothing can be decided early (equivalence
# needs a ROPE), so the study takes every look of seeds.min=2 .. seeds.max=4.
SMALL = (
    "debug=tiny representations=false model.encoders.audio.width=4 "
    "model.encoders.image.width=4 trainer.batch_size=128"
)
EVERY_LOOK = f"{SMALL} seeds.min=2 seeds.max=4 seeds.futility=0 analysis.rope=0"


def looks_of(client: MlflowClient, parent_id: str) -> dict[int, list[Run]]:
    found: dict[int, list[Run]] = {}
    for run in children(client, parent_id):
        if run.data.tags[schema.STAGE] == schema.STAGE_ANALYSIS:
            found.setdefault(int(run.data.tags[schema.ANALYSIS_LOOK]), []).append(run)
    return found


def check_adaptive_tree(client: MlflowClient, parent: Run, looks: list[int]) -> None:
    """One analysis child per look, tagged with its number; each cell's seeds exactly once."""
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags[schema.SEEDS_LOOKS] == ",".join(map(str, looks))
    assert tags[schema.SEEDS_USED] == str(looks[-1])
    assert parent.data.params["pipeline.seeds"] == "auto"
    analyses = looks_of(client, parent.info.run_id)
    assert sorted(analyses) == list(range(1, len(looks) + 1))
    assert all(len(found) == 1 for found in analyses.values())  # no look analysed twice
    cells = [
        r
        for r in children(client, parent.info.run_id)
        if r.data.tags[schema.STAGE] == schema.STAGE_MULTIMODAL
    ]
    keys = sorted((r.data.tags[schema.CONDITION], int(r.data.tags[schema.SEED])) for r in cells)
    assert keys == sorted((c, s) for c in ("pretrained", "scratch") for s in range(looks[-1]))
    assert all(r.info.status == "FINISHED" for r in cells)


def test_an_undecided_study_takes_every_look_and_records_them(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri)
    main(["pipeline", "--epochs", "1", "--overrides", EVERY_LOOK])
    out = capsys.readouterr().out
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    check_adaptive_tree(client, parent, [2, 3, 4])
    assert client.get_run(parent.info.run_id).data.tags[schema.SEEDS_STOP] == "seeds.max=4 reached"
    assert "look 1 (2 seeds): 0 of 1 open strata stop" in out
    assert "Adaptive seeds: looks at 2, 3, 4 seeds; stopped: seeds.max=4 reached" in out
    # the last look's report states the procedure and the look of every row
    last = looks_of(client, parent.info.run_id)[3][0]
    report = client.download_artifacts(last.info.run_id, schema.ANALYSIS_REPORT_ARTIFACT)
    text = Path(report).read_text()
    assert "Procedure: group-sequential, pocock spending, looks at 2, 3, 4 seeds" in text
    assert "## Sequential looks" in text and "| looks taken |" in text
    # a standalone analysis of the pipeline reads its design back from the parent
    main(["analyze", "--parent-run", parent.info.run_id, "--no-log"])
    assert "repeated CIs of a group-sequential" in capsys.readouterr().out


def test_a_study_killed_between_looks_resumes_like_a_fixed_grid(
    tracking_uri: str, subprocess_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri)
    args = ["pipeline", "--epochs", "1", "--overrides", EVERY_LOOK]
    proc = tsp_process(args, subprocess_env)

    def first_look_then_a_cell() -> Run | None:
        analyses = runs(client, f"tags.`{schema.STAGE}` = 'analysis'")
        if not any(r.info.status == "FINISHED" for r in analyses):
            return None
        cells = runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")
        return next((r for r in cells if r.data.tags[schema.SEED] == "2"), None)

    wait_for("look 1 and a look-2 cell", first_look_then_a_cell, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    assert parent.info.status == "RUNNING" and sorted(looks_of(client, parent.info.run_id)) == [1]

    main([*args, "--resume", parent.info.run_id])
    out = capsys.readouterr().out
    assert "look 1 (2 seeds): analysed earlier" in out
    check_adaptive_tree(client, parent, [2, 3, 4])


def test_a_grid_stops_each_stratum_on_its_own(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two fusion strata; the futility rule (threshold 0.99: almost surely hopeless) stops
    both at the first look, each for its own reason, and the parent says how many."""
    client = MlflowClient(tracking_uri)
    main(
        [
            "pipeline",
            "--epochs",
            "1",
            "--overrides",
            f"{SMALL} grid.fusions=[concat,sum] seeds.min=2 seeds.max=4 seeds.futility=0.99 "
            "analysis.rope=0",
        ]
    )
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    tags = client.get_run(parent.info.run_id).data.tags
    assert tags[schema.SEEDS_LOOKS] == "2" and tags[schema.SEEDS_USED] == "2"
    assert tags[schema.SEEDS_STOP] == "2 strata: futility"
    assert "look 1 (2 seeds): 2 of 2 open strata stop" in capsys.readouterr().out
