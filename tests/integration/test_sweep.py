"""`tsp sweep`: trials as nested runs with pruning, the best on the parent, param
importance, resuming, workers sharing one study, and the sensitivity report."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from analysis.data import Selection, select_runs
from tests.integration.examples import examples_of
from tests.integration.flow import artifact_paths, children, mlflow_run, runs
from tsp_mlflow.cli import main
from tsp_mlflow.recipes.sweep import RUN_ATTR, SURPLUS_ATTR
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.lab_server import tracking_server
from tsp_mlflow.tracking.loopback_server import free_port

pytestmark = pytest.mark.integration

# Narrow encoders keep these tests fast; the sweep does not care about their size.
NARROW = "model.encoders.audio.width=4 model.encoders.image.width=4"
# Two epochs, so the median pruner has an epoch to stop a trial at; a learning rate of
# 1e-5 learns nothing in two epochs, so such trials fall below the median and are pruned.
PRUNING = [
    "--epochs",
    "2",
    "--overrides",
    f"{NARROW} representations=false trainer.batch_size=64 sweep.pruner.n_startup_trials=2 "
    "'optim.lr=choice(1e-5, 3e-3)' model.head.dropout=0.1 optim.weight_decay=1e-4",
]


def sweep_parent(client: MlflowClient) -> object:
    (parent,) = runs(
        client, f"tags.`{schema.STAGE}` = 'sweep' and tags.`{schema.SWEEP_ROLE}` = 'parent'"
    )
    return parent


def trials_of(client: MlflowClient, parent_id: str) -> list:
    return [r for r in children(client, parent_id) if schema.TRIAL_NUMBER in r.data.tags]


def test_a_sweep_with_pruning_is_one_parent_with_its_trials(
    tracking_uri: str, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    main(["sweep", "--trials", "6", "--study", "t6", "--storage", storage, *PRUNING])
    client = MlflowClient(tracking_uri)
    parent = sweep_parent(client)
    assert parent.info.status == "FINISHED" and parent.data.tags[schema.SWEEP_STUDY] == "t6"
    trials = trials_of(client, parent.info.run_id)
    assert sorted(int(r.data.tags[schema.TRIAL_NUMBER]) for r in trials) == list(range(6))

    study = optuna.load_study(study_name="t6/scratch", storage=storage)
    by_run = {t.user_attrs[RUN_ATTR]: t for t in study.trials}
    assert set(by_run) == {r.info.run_id for r in trials}  # every Optuna trial is tracked
    for run in trials:
        tags, metrics = run.data.tags, run.data.metrics
        trial = by_run[run.info.run_id]
        assert int(tags[schema.TRIAL_NUMBER]) == trial.number
        assert tags[schema.TRIAL_STATE] == trial.state.name
        values = json.loads(tags[schema.TRIAL_PARAMS])
        assert values == trial.params
        assert float(run.data.params["optim.lr"]) == values["optim.lr"]  # the trial ran them
        if trial.state.name == "PRUNED":  # visibly not a normal finished run
            assert run.info.status == "KILLED" and "pruned" in tags[schema.STOPPED]
            assert int(tags[schema.TRIAL_PRUNED_EPOCH]) == trial.last_step
            assert not any(k.startswith("test/") for k in metrics)
        else:
            assert trial.state.name == "COMPLETE" and run.info.status == "FINISHED"
            assert metrics[schema.BEST_VALUE] == pytest.approx(trial.value)
            assert "test/audio-image/accuracy" in metrics
    states = [t.state.name for t in study.trials]
    assert "PRUNED" in states and "COMPLETE" in states

    complete = [r for r in trials if r.data.tags[schema.TRIAL_STATE] == "COMPLETE"]
    best = max(
        complete,
        key=lambda r: (r.data.metrics[schema.BEST_VALUE], -int(r.data.tags[schema.TRIAL_NUMBER])),
    )
    tags = parent.data.tags
    assert tags[schema.sweep_best_tag("scratch", "run_id")] == best.info.run_id
    for key, value in json.loads(best.data.tags[schema.TRIAL_PARAMS]).items():
        assert tags[schema.sweep_best_tag("scratch", key)] == str(value)
    assert parent.data.metrics[schema.sweep_best_metric("scratch")] == pytest.approx(
        best.data.metrics[schema.BEST_VALUE]
    )
    assert parent.data.params["sweep.params.optim.lr"] == "choice(1e-5, 3e-3)"

    files = artifact_paths(client, parent.info.run_id)
    for name in ("importance.csv", "importance.png", "history.png", "best.json", "trials.csv"):
        assert f"sweep/scratch/{name}" in files
    local = client.download_artifacts(parent.info.run_id, "sweep/scratch", str(tmp_path))
    importance = pd.read_csv(Path(local) / "importance.csv")
    assert set(importance["parameter"]) <= {"optim.lr", "model/fusion"}
    assert importance["importance"].sum() == pytest.approx(1.0)
    best_json = json.loads((Path(local) / "best.json").read_text())
    assert best_json["run_id"] == best.info.run_id and "optim.lr=" in " ".join(
        best_json["overrides"]
    )

    # The same study name resumes the study under the same parent, up to the new total.
    main(["sweep", "--trials", "8", "--study", "t6", "--storage", storage, *PRUNING])
    assert sweep_parent(client).info.run_id == parent.info.run_id
    assert sorted(
        int(r.data.tags[schema.TRIAL_NUMBER]) for r in trials_of(client, parent.info.run_id)
    ) == list(range(8))
    assert len(optuna.load_study(study_name="t6/scratch", storage=storage).trials) == 8
    # Other settings under the same name are refused before any trial runs.
    with pytest.raises(SystemExit) as failed:
        main(["sweep", "--trials", "8", "--study", "t6", "--storage", storage, "--epochs", "3"])
    assert failed.value.code == 2
    # Trials never mix into the pretrained-vs-scratch analysis of the experiment.
    assert select_runs(client, Selection((parent.info.experiment_id,))) == []


def test_two_workers_share_one_study_on_postgresql(
    subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """`tsp server`'s PostgreSQL holds both the MLflow store and the Optuna study."""
    folder = Path(tempfile.mkdtemp(prefix="tsp-sweep-"))
    folder.chmod(0o711)  # PostgreSQL runs as `postgres` under root; it must reach the folder
    cleanup = contextlib.ExitStack()
    cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
    with cleanup, tracking_server(folder, port=free_port(), workers=2) as served:
        url, storage = served.url, served.optuna_storage
        assert storage is not None and storage.startswith("postgresql+psycopg2://")
        env = {**subprocess_env, "MLFLOW_TRACKING_URI": url, "TSP_SWEEP_STORAGE": storage}
        cmd = [
            sys.executable,
            "-m",
            "tsp_mlflow",
            "sweep",
            "--trials",
            "5",
            "--study",
            "shared",
            "--epochs",
            "1",
            "--overrides",
            f"debug=tiny trainer.batch_size=256 sweep/pruner=none {NARROW}",
        ]
        workers = [
            subprocess.Popen(
                cmd,
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=600)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        client = MlflowClient(url)
        parent = sweep_parent(client)  # exactly one parent, whichever worker made it
        assert parent.info.status == "FINISHED"
        trials = trials_of(client, parent.info.run_id)
        every = optuna.load_study(study_name="shared/scratch", storage=storage).trials
    counted = [t for t in every if not t.user_attrs.get(SURPLUS_ATTR)]
    assert len(counted) == 5
    assert sorted(t.number for t in every) == list(range(len(every)))  # no duplicate
    numbers = sorted(int(r.data.tags[schema.TRIAL_NUMBER]) for r in trials)
    assert numbers == sorted(t.number for t in counted)  # every trial tracked, once
    assert {r.info.run_id for r in trials} == {t.user_attrs[RUN_ATTR] for t in counted}
    assert all(r.info.status == "FINISHED" for r in trials)
    assert len({r.data.tags[schema.TRIAL_WORKER] for r in trials}) == 2, outputs  # both worked
    # Each worker seeds its own sampler: no configuration is proposed twice.
    assert len({r.data.tags[schema.TRIAL_PARAMS] for r in trials}) == len(trials)
    best = max(counted, key=lambda t: (t.value, -t.number))
    assert parent.data.tags[schema.sweep_best_tag("scratch", "run_id")] == best.user_attrs[RUN_ATTR]
    for key, value in best.params.items():  # the best params, on the one parent
        assert parent.data.tags[schema.sweep_best_tag("scratch", key)] == str(value)
    assert parent.data.metrics[schema.sweep_best_metric("scratch")] == pytest.approx(best.value)


def test_an_interrupted_worker_leaves_its_trial_failed_and_a_resume_redoes_it(
    subprocess_env: dict[str, str], tracking_uri: str, tmp_path: Path
) -> None:
    import signal
    import time

    args = [
        "sweep",
        "--trials",
        "1",
        "--study",
        "stop",
        "--epochs",
        "3",
        "--overrides",
        f"representations=false trainer.batch_size=32 sweep/pruner=none {NARROW}",
    ]
    worker = subprocess.Popen(
        [sys.executable, "-m", "tsp_mlflow", *args],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = MlflowClient(tracking_uri)
    deadline = time.monotonic() + 300
    while not runs(
        client, f"tags.`{schema.TRIAL_STATE}` = 'RUNNING' and metrics.`time/epoch_s` > 0"
    ):
        assert worker.poll() is None and time.monotonic() < deadline, worker.stdout.read()
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)  # what a scheduler sends
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode != 0
    parent = sweep_parent(client)
    assert (
        parent.info.status == "KILLED" and "KeyboardInterrupt" in parent.data.tags[schema.ERROR]
    ), output
    (stopped,) = trials_of(client, parent.info.run_id)
    assert stopped.info.status == "KILLED" and stopped.data.tags[schema.TRIAL_STATE] == "FAIL"

    main(args)  # resume: the interrupted trial does not count, so one more trial runs
    parent = sweep_parent(client)
    assert parent.info.status == "FINISHED"
    states = {
        int(r.data.tags[schema.TRIAL_NUMBER]): r.data.tags[schema.TRIAL_STATE]
        for r in trials_of(client, parent.info.run_id)
    }
    assert states == {0: "FAIL", 1: "COMPLETE"}


def test_sensitivity_sweep_compares_scratch_and_pretrained(
    subprocess_env: dict[str, str],
    tracking_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = {
        "trials": 4,
        "overrides": f"sweep=sensitivity debug=tiny {NARROW} "
        "'optim.lr=choice(1e-3, 3e-3)' 'trainer.batch_size=choice(128, 256)'",
    }
    done = mlflow_run("sweep", params, subprocess_env)  # the MLproject entry point
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    parent = sweep_parent(client)
    assert parent.info.status == "FINISHED"
    kids = children(client, parent.info.run_id)
    # `mlflow run`'s own run is this worker's record under the parent (`mlflow run` closes
    # its run when the process ends; a parent must stay open while other workers run).
    (worker,) = [r for r in kids if r.data.tags.get(schema.SWEEP_ROLE) == "worker"]
    assert (
        worker.data.tags["mlflow.project.entryPoint"] == "sweep"
        and worker.info.status == "FINISHED"
    )
    pretrain = {
        r.data.tags[schema.MODALITY]: r.info.run_id
        for r in kids
        if r.data.tags[schema.STAGE] == schema.STAGE_PRETRAIN
    }
    assert set(pretrain) == {"audio", "image"}
    trials = trials_of(client, parent.info.run_id)
    assert (
        sorted(r.data.tags[schema.CONDITION] for r in trials)
        == ["pretrained"] * 4 + ["scratch"] * 4
    )
    for run in trials:
        if run.data.tags[schema.CONDITION] == "pretrained":  # lineage to the sweep's encoders
            assert {m: run.data.tags[schema.encoder_run_tag(m)] for m in pretrain} == pretrain

    files = artifact_paths(client, parent.info.run_id)
    for name in ("report.md", "values.csv", "robustness.png", "landscape.png"):
        assert f"{schema.SENSITIVITY_DIR}/{name}" in files
    local = Path(
        client.download_artifacts(parent.info.run_id, schema.SENSITIVITY_DIR, str(tmp_path))
    )
    values = pd.read_csv(local / "values.csv")
    # The grid sampler gave both conditions the same four configurations: paired.
    configs = values.groupby("condition")["config"].apply(frozenset)
    assert configs["pretrained"] == configs["scratch"] and len(configs["scratch"]) == 4
    # Regrets recomputed from the trial runs themselves.
    for condition, group in values.groupby("condition"):
        mine = {
            r.info.run_id: r.data.metrics[schema.BEST_VALUE]
            for r in trials
            if r.data.tags[schema.CONDITION] == condition
        }
        best = max(mine.values())
        for row in group.itertuples():
            assert row.regret == pytest.approx(best - mine[row.run_id])
    report = (local / "report.md").read_text()
    assert "paired by configuration" in report and "pretrained vs scratch" in report

    # `tsp sensitivity --help`'s examples, on this sweep (report/ lands in the cwd).
    examples = examples_of("tsp sensitivity")
    assert len(examples) == 3
    for example in examples:
        _, words = example.argv({"<sweep run id>": parent.info.run_id})
        main(words[1:])
    assert (Path("report") / "report.md").read_text().startswith("# Hyperparameter sensitivity")
    capsys.readouterr()
    main(["sensitivity", parent.info.run_id, "--no-log", "--output", str(tmp_path / "again")])
    assert (tmp_path / "again" / "report.md").read_text() == report  # same inputs, same report
    assert "Hyperparameter sensitivity" in capsys.readouterr().out
    # On a test metric: the values are the trials' own test accuracies.
    main(
        [
            "sensitivity",
            parent.info.run_id,
            "--no-log",
            "--metric",
            "test/audio-image/accuracy",
            "--output",
            str(tmp_path / "test"),
        ]
    )
    test_values = pd.read_csv(tmp_path / "test" / "values.csv").set_index("run_id")["value"]
    for run in trials:
        assert test_values[run.info.run_id] == run.data.metrics["test/audio-image/accuracy"]
