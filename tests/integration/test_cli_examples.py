"""Every example in `tsp --help` and in each subcommand's help is executed, in the order
the help shows it, on one store that the first example (a small pipeline) fills; and
`--dry-run` creates nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tests.formats import write_avmnist_npy, write_mmimdb_hdf5, write_mosi
from tests.integration.browser import tsp_ui
from tests.integration.examples import help_examples
from tsp_mlflow.cli import main

pytestmark = pytest.mark.integration

# These would train for minutes here (ten-epoch runs, grids, 20-trial sweeps): they run
# with --dry-run, which makes every check a run makes before it exists (config, data,
# encoder sources, a resumed run's settings) and trains nothing.
TRAIN_FOR_MINUTES = {
    "tsp multimodal --encoders audio=scratch,image=pretrained --seed 3",
    'tsp multimodal --overrides "gradient=mmpareto"       # unimodal losses, MMPareto',
    'tsp multimodal --overrides "imputation=predicted missing.train=0.5"',
    "tsp multimodal --encoders contrastive                # contrastive pretrained encoders",
    "tsp pipeline                       # seeds=auto: adds seeds until the verdicts are decided",
    "tsp pipeline --seeds 5             # a fixed design: 5 seeds per condition",
    'tsp pipeline --seeds 2 --epochs 1 --overrides "grid=fusions"      # 6 fusion methods',
    'tsp pipeline --overrides "grid=missing grid.conditions=[scratch,audio_scratch] analysis.a=audio_scratch"',
    "tsp sweep --trials 20                                   # TPE + median pruning",
    'tsp sweep --trials 30 --overrides "sweep.conditions=[pretrained]"',
    "tsp sweep --overrides \"optim.lr='tag(log, interval(1e-5, 1e-1))' model/fusion=gated\"",
    'tsp sweep --overrides "sweep=sensitivity" --epochs 5    # lr x batch, scratch vs pretrained',
    'tsp sweep --overrides "sweep=pretrain modality=audio"   # tune one encoder\'s pretraining',
    "TSP_SWEEP_STORAGE=postgresql+psycopg2://me@db/optuna tsp sweep --study big   # each worker",
    "torchrun --nproc_per_node=2 -m tsp_mlflow multimodal --encoders pretrained",
}
# Services run until Ctrl-C: here with --dry-run; `tsp ui` serves the browser test
# (test_pipeline.py) and `tsp server` the server tests (test_server.py).
SERVICES = ("tsp server", "tsp ui")
# A sensitivity report needs a finished sweep: test_sweep.py runs these examples on one.
RUN_ELSEWHERE = ("tsp sensitivity",)
PASSWORD = "an-example-password"  # for MLFLOW_AUTH_ADMIN_PASSWORD=...


def all_runs(client: MlflowClient) -> dict[str, object]:
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return {r.info.run_id: r for r in client.search_runs(ids, max_results=5000)}


def execute(words: list[str], env: dict[str, str], cwd: Path) -> None:
    """One example, as typed: `tsp` in this process, torchrun as a process."""
    if words[0] == "torchrun":
        done = subprocess.run(
            [str(Path(sys.executable).parent / "torchrun"), *words[1:]],
            cwd=cwd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Dry run:" in done.stdout
        return
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        main(words[1:])
    except SystemExit as stop:
        assert stop.code in (0, None), f"exit {stop.code}"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_every_help_example_runs(
    tracking_uri: str,
    tmp_path: Path,
    subprocess_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    examples = help_examples()
    assert {e.line for e in examples} >= TRAIN_FOR_MINUTES  # none of these went stale
    data = tmp_path / "datasets"
    paths = {
        "/data/avmnist": str(write_avmnist_npy(data / "avmnist")),
        "/data/mmimdb/multimodal_imdb.hdf5": str(
            write_mmimdb_hdf5(data / "mmimdb" / "multimodal_imdb.hdf5")
        ),
        "/data/MOSI/aligned_50.pkl": str(write_mosi(data / "MOSI" / "aligned_50.pkl", "mmsa")),
        "MLFLOW_AUTH_ADMIN_PASSWORD=...": f"MLFLOW_AUTH_ADMIN_PASSWORD={PASSWORD}",
    }
    client = MlflowClient(tracking_uri)
    made: dict[str, str] = {}  # stage -> the newest top-level run an example made
    executed = []
    with tsp_ui(tracking_uri, tmp_path, subprocess_env) as served:  # the remote-server example
        paths["http://mlflow.lab:5000"] = served
        for example in examples:
            if example.command in RUN_ELSEWHERE:
                continue
            substitutions = dict(paths)
            stage = example.command.split()[-1]
            if "<run id>" in example.line:  # continue the run this command's example made
                run_id = made[stage]
                client.set_terminated(run_id, "KILLED")  # as a crash leaves it
                substitutions["<run id>"] = run_id
            if "<pipeline run id>" in example.line:
                substitutions["<pipeline run id>"] = made["pipeline"]
            env, words = example.argv(substitutions)
            dry = example.line in TRAIN_FOR_MINUTES or example.command in SERVICES
            if dry and "--dry-run" not in words:
                words.append("--dry-run")
            before = all_runs(client)
            capsys.readouterr()
            execute(words, env, tmp_path)
            out = capsys.readouterr().out
            after = all_runs(client)
            if "--dry-run" in words:  # nothing created, nothing changed
                assert after.keys() == before.keys(), example.line
                said = re.match(r"(Dry run: |would start: )", out) or "would mark" in out
                # torchrun: checked above; analyze --dry-run is --no-log: the report only
                assert said or words[0] == "torchrun" or example.command == "tsp analyze", out
            new = [r for r in after.values() if r.info.run_id not in before]
            top = [r for r in new if "mlflow.parentRunId" not in r.data.tags]
            for run in top:
                made[run.data.tags["tsp.stage"]] = run.info.run_id
            if "<run id>" in example.line:  # the same run, continued and finished
                assert not new and client.get_run(made[stage]).info.status == "FINISHED"
            executed.append(example.line)
    assert len(executed) == len([e for e in examples if e.command not in RUN_ELSEWHERE])
    assert (tmp_path / "report" / "report.md").exists()  # analyze --output report/

    # `tsp runs`: the table names each run with what it is; --ids lists exactly the matches.
    capsys.readouterr()
    main(["runs", "--stage", "multimodal", "--condition", "pretrained", "--status", "FINISHED"])
    table = capsys.readouterr().out
    fused = [
        r
        for r in all_runs(client).values()
        if r.data.tags.get("tsp.condition") == "pretrained"
        and r.data.tags["tsp.stage"] == "multimodal"
        and r.info.status == "FINISHED"
    ]
    assert fused and all(r.info.run_id in table for r in fused)
    assert "scratch," not in table and "pretrained, concat, seed 0" in table
    assert re.search(r"accuracy 0\.\d{3}", table)  # the full pattern's test headline
    main(["runs", "--parent-run", made["pipeline"], "--ids"])
    listed = capsys.readouterr().out.split()
    kids = [
        r.info.run_id
        for r in all_runs(client).values()
        if r.data.tags.get("mlflow.parentRunId") == made["pipeline"]
    ]
    assert sorted(listed) == sorted(kids) and len(kids) >= 7


def test_a_shell_splits_every_example_as_the_test_does() -> None:
    """The examples are run through shlex above; a user pastes them into bash. Backticks
    or `$` inside double quotes would be expanded there: bash must see the same words."""
    for example in help_examples():
        if "<" in example.line:  # placeholders: the test above substitutes them
            continue
        env, words = example.argv({})
        line = example.line
        for key, value in env.items():
            line = line.replace(f"{key}={value}", "", 1)
        said = subprocess.run(
            ["bash", "-c", f"printf '%s\\0' {line}"],
            capture_output=True,
            text=True,
            timeout=30,
            env={},
        )
        assert said.returncode == 0 and said.stderr == "", (example.line, said.stderr)
        assert said.stdout.split("\0")[:-1] == words, example.line


def test_dry_run_creates_no_run_experiment_or_file(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def store() -> tuple[list[str], list[str], list[str]]:
        client = MlflowClient(tracking_uri)
        experiments = client.search_experiments(view_type=ViewType.ALL)
        runs = client.search_runs([e.experiment_id for e in experiments])
        models = client.search_registered_models()
        return (
            [e.name for e in experiments],
            [r.info.run_id for r in runs],
            [m.name for m in models],
        )

    empty = store()
    files = set(tmp_path.rglob("*"))
    for argv in (
        ["--dry-run", "pretrain", "--modality", "audio"],
        ["pretrain", "--objective", "contrastive", "--dry-run"],
        ["--dry-run", "multimodal", "--fusion", "attention", "--overrides", "gradient=mmpareto"],
        ["--dry-run", "--skip-test", "--system-metrics", "pipeline", "--seeds", "3"],
        ["--dry-run", "sweep", "--trials", "4"],
    ):
        execute(["tsp", *argv], {}, tmp_path)
    plans = capsys.readouterr().out
    assert plans.count("Dry run: every input was checked; no run was created") == 5
    for line in (
        "tsp multimodal: attention fusion on avdigits",
        "experiment  avdigits (would be created) in sqlite:///",
        "method      gradient mmpareto, imputation none",
        "patterns    3 on val and test: audio-image, audio, image",
        "registers   avdigits-audio-encoder (a new version each",
        "fusion runs  6 (grid x 3 seeds)",
        "tsp sweep: study avdigits-default on avdigits",
        "trials      4 per condition, each a multimodal run",
    ):
        assert line in plans, line
    assert store() == empty == (["Default"], [], [])
    assert set(tmp_path.rglob("*")) == files  # no optuna.db, no checkpoint, no mlruns/


def test_a_switch_a_command_does_not_take_is_refused_by_name(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--skip-train", "pipeline", "--seeds", "1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "tsp: error: --skip-train does not apply to tsp pipeline; it applies to pretrain and "
        "multimodal"
    )
    assert MlflowClient(tracking_uri).search_runs(["0"]) == []
    with pytest.raises(SystemExit):
        main(["--disable-monitoring", "pretrain", "--modality", "audio", "--system-metrics"])
    assert "drop one of it and --system-metrics" in capsys.readouterr().err
