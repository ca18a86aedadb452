"""Acceptance: a SIGKILLed run resumes in place, with the results of an uninterrupted run
and every epoch logged exactly once; a SIGKILLed pipeline finishes its grid on resume."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from tests.integration.flow import artifact_paths, children, runs
from tsp_mlflow.cli import main
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration

EPOCHS = 4
# min_interval_s=0: a checkpoint every epoch, so kills land between checkpoints of any epoch.
ARGS = [
    "multimodal",
    "--epochs",
    str(EPOCHS),
    "--seed",
    "3",
    "--overrides",
    "representations=false trainer.batch_size=64 model.encoders.audio.width=8 "
    "model.encoders.image.width=8 trainer.checkpoint.min_interval_s=0",
]


def tsp_process(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tsp_mlflow", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(what: str, check: Callable[[], object], proc: subprocess.Popen[str]) -> object:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def epochs_logged(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, schema.TIME_EPOCH))


def outcome(run: Run) -> dict[str, float]:
    """What a run computed: every metric except timings (which no two runs share)."""
    return {k: v for k, v in run.data.metrics.items() if not k.startswith("time/")}


def test_sigkill_at_random_epochs_then_resume_equals_an_uninterrupted_run(
    tracking_uri: str, subprocess_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri)
    main(ARGS)
    (reference,) = runs(client, "")
    want = outcome(reference)
    epoch_s = max(
        m.value for m in client.get_metric_history(reference.info.run_id, schema.TIME_EPOCH)
    )

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"kill points drawn with random.Random({seed})")
    for trial in range(3):
        kill_after = rng.randint(0, EPOCHS - 2)  # 0: before the first epoch ends
        delay = rng.uniform(0, 0.8 * epoch_s)
        # The middle trial writes from the background thread (a GPU's default): a kill then
        # also lands while an epoch's writes overlap the next epoch's training.
        writes = "true" if trial == 1 else "auto"
        args = [*ARGS[:-1], f"{ARGS[-1]} tracking.background_writes={writes}"]
        proc = tsp_process(args, subprocess_env)
        known = {r.info.run_id for r in runs(client, "")}

        def new_run(known: set[str] = known) -> Run | None:
            fresh = [r for r in runs(client, "") if r.info.run_id not in known]
            return fresh[0] if fresh else None

        run = wait_for("the run to start", new_run, proc)
        run_id = run.info.run_id  # type: ignore[union-attr]
        reached = lambda r=run_id, k=kill_after: len(epochs_logged(client, r)) >= k  # noqa: E731
        wait_for(f"epoch {kill_after}", reached, proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cut = epochs_logged(client, run_id)
        assert client.get_run(run_id).info.status == "RUNNING", (
            f"trial {trial} ended before the kill"
        )
        assert len(cut) < EPOCHS

        main([*ARGS, "--resume", run_id])  # reaps the dead run, then continues it
        out = capsys.readouterr().out
        assert "was left RUNNING by a dead process" in out and f"resuming run {run_id}" in out
        resumed = client.get_run(run_id)
        assert resumed.info.status == "FINISHED"
        assert "reaped: its process" in resumed.data.tags[schema.INTERRUPTED]  # its history
        assert schema.ERROR not in resumed.data.tags
        got = outcome(resumed)
        assert got.keys() == want.keys()
        for key, value in want.items():  # CPU, same seed: the same numbers
            assert math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-9), (trial, key)
        for key in resumed.data.metrics:
            steps = sorted(m.step for m in client.get_metric_history(run_id, key))
            if key.startswith(("train/", "val/")) or key == schema.TIME_EPOCH:
                assert steps == list(range(1, EPOCHS + 1)), (trial, key, cut)
            else:
                assert len(steps) == len(set(steps)), (trial, key)
        ckpts = artifact_paths(client, run_id, schema.CHECKPOINT_DIR)
        assert {p for p in ckpts if p.endswith("state.json")} == {
            f"{schema.checkpoint_path(EPOCHS)}/state.json"
        }  # superseded checkpoints are deleted
    assert client.search_registered_models() == []


def test_a_killed_pipeline_resumes_its_interrupted_cell_in_place(
    tracking_uri: str, subprocess_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri)
    args = [
        "pipeline",
        "--seeds",
        "1",
        "--epochs",
        "3",
        "--overrides",
        "grid.fusions=[concat,sum] representations=false trainer.batch_size=128 "
        "model.encoders.audio.width=4 model.encoders.image.width=4 "
        "trainer.checkpoint.min_interval_s=0",
    ]
    proc = tsp_process(args, subprocess_env)

    def second_cell_midway() -> Run | None:
        cells = runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")
        done = [r for r in cells if r.info.status == "FINISHED"]
        going = [r for r in cells if r.info.status == "RUNNING"]
        if done and going and epochs_logged(client, going[0].info.run_id):
            return going[0]
        return None

    cut_cell = wait_for("a cell midway", second_cell_midway, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    assert parent.info.status == "RUNNING"
    before = {r.info.run_id for r in runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")}

    main([*args, "--resume", parent.info.run_id])
    out = capsys.readouterr().out
    assert "finished earlier" in out
    kids = children(client, parent.info.run_id)
    cells = [r for r in kids if r.data.tags[schema.STAGE] == "multimodal"]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in kids)
    # No cell ran twice: the interrupted one was continued in place, not started anew.
    assert len(cells) == 4 and before <= {r.info.run_id for r in cells}
    assert len({(r.data.tags[schema.FUSION], r.data.tags[schema.CONDITION]) for r in cells}) == 4
    continued = client.get_run(cut_cell.info.run_id)  # type: ignore[union-attr]
    assert continued.info.status == "FINISHED" and schema.RESUMED in continued.data.tags
    assert epochs_logged(client, continued.info.run_id) == [1, 2, 3]
    assert len(runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")) == 2


def test_sigterm_saves_a_checkpoint_and_ends_the_run_killed(
    tracking_uri: str, subprocess_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(tracking_uri)
    args = [*ARGS[:-1], ARGS[-1] + " trainer.checkpoint.every_n_epochs=100"]
    proc = tsp_process(args, subprocess_env)
    run = wait_for(
        "an epoch",
        lambda: next((r for r in runs(client, "") if epochs_logged(client, r.info.run_id)), None),
        proc,
    )
    run_id = run.info.run_id  # type: ignore[union-attr]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert f"rerunning the same command with --resume {run_id}" in proc.stderr.read()  # type: ignore[union-attr]
    stopped = client.get_run(run_id)
    assert stopped.info.status == "KILLED"
    assert "interrupted" in stopped.data.tags[schema.ERROR]
    # every_n_epochs=100 saves nothing on its own: this checkpoint is the SIGTERM one, of
    # the last epoch that finished.
    saved = [
        p for p in artifact_paths(client, run_id, schema.CHECKPOINT_DIR) if p.endswith(".json")
    ]
    assert len(saved) == 1
    assert saved[0] == f"{schema.checkpoint_path(max(epochs_logged(client, run_id)))}/state.json"

    main([*args, "--resume", run_id])
    assert client.get_run(run_id).info.status == "FINISHED"
    assert epochs_logged(client, run_id) == list(range(1, EPOCHS + 1))


def test_an_interrupted_run_resumes_with_its_own_encoders_after_the_champion_moved(
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM after epoch 1 leaves a KILLED run with a checkpoint; a newer @champion must
    not change which encoder the resumed run continues with."""
    from tests.integration.test_bad_input import encoder_run
    from tsp_mlflow.tracking.epoch_log import EpochLogger

    client = MlflowClient(tracking_uri)
    name = schema.registered_encoder_name("avdigits", "image")
    first, second = encoder_run(tmp_path / "v1", "image"), encoder_run(tmp_path / "v2", "image")
    client.create_registered_model(name)
    for run_id in (first, second):
        client.create_model_version(name, f"runs:/{run_id}/encoder", run_id=run_id)
    client.set_registered_model_alias(name, schema.CHAMPION_ALIAS, "1")

    log_epoch = EpochLogger.log_epoch

    def interrupted(self, epoch, metrics, seconds, **kwargs):  # type: ignore[no-untyped-def]
        log_epoch(self, epoch, metrics, seconds, **kwargs)
        if epoch == 1:  # from the writer thread; the signal interrupts training in the main one
            os.kill(os.getpid(), signal.SIGTERM)

    args = [
        "multimodal",
        "--encoders",
        "audio=scratch,image=pretrained",
        "--epochs",
        "2",
        "--overrides",
        "debug=tiny trainer.epochs=2",
    ]
    monkeypatch.setattr(EpochLogger, "log_epoch", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 128 + signal.SIGTERM
    monkeypatch.setattr(EpochLogger, "log_epoch", log_epoch)
    (run,) = runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")
    assert run.info.status == "KILLED" and epochs_logged(client, run.info.run_id) == [1]
    assert {
        p
        for p in artifact_paths(client, run.info.run_id, schema.CHECKPOINT_DIR)
        if p.endswith(".json")
    } == {f"{schema.checkpoint_path(1)}/state.json"}

    client.set_registered_model_alias(name, schema.CHAMPION_ALIAS, "2")  # champion moves on
    other = ["--encoders", "scratch", *args[3:]]
    with pytest.raises(SystemExit) as refused:
        main([*args[:1], *other, "--resume", run.info.run_id])
    assert refused.value.code == 2
    assert (
        "encoders: run has 'audio=scratch,image=pretrained', now 'scratch'"
        in capsys.readouterr().err
    )
    main([*args, "--resume", run.info.run_id])
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED" and epochs_logged(client, run.info.run_id) == [1, 2]
    assert resumed.data.tags[schema.encoder_run_tag("image")] == first  # not the new champion
    assert resumed.data.tags[schema.encoder_source_tag("image")].endswith("@champion")  # as given
    assert resumed.data.params["encoders"] == "audio=scratch,image=pretrained"
    assert schema.ERROR not in resumed.data.tags
    assert resumed.data.tags[schema.INTERRUPTED] == "interrupted (SIGINT/SIGTERM/SIGHUP)"
    assert resumed.data.tags[schema.RESUMED] == "1"


def test_two_resumes_of_one_run_at_once_leave_one_writer(
    tracking_uri: str, subprocess_env: dict[str, str]
) -> None:
    client = MlflowClient(tracking_uri)
    proc = tsp_process(ARGS, subprocess_env)
    run = wait_for(
        "an epoch",
        lambda: next((r for r in runs(client, "") if epochs_logged(client, r.info.run_id)), None),
        proc,
    )
    run_id = run.info.run_id  # type: ignore[union-attr]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumes = [tsp_process([*ARGS, "--resume", run_id], subprocess_env) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in resumes)
    errors = "".join(p.stderr.read() for p in resumes)  # type: ignore[union-attr]
    # One continues the run; the other stands down (or is refused: the run is live).
    assert codes == [0, 2], errors[-3000:]
    assert "another process" in errors or "is still RUNNING" in errors
    done = client.get_run(run_id)
    assert done.info.status == "FINISHED" and schema.ERROR not in done.data.tags
    for key in done.data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), key  # nothing logged twice
    assert epochs_logged(client, run_id) == list(range(1, EPOCHS + 1))


PIPELINE = [
    "pipeline",
    "--seeds",
    "2",
    "--epochs",
    "2",
    "--overrides",
    "representations=false trainer.batch_size=128 model.encoders.audio.width=4 "
    "model.encoders.image.width=4 trainer.checkpoint.min_interval_s=0",
]


def _pretraining(client: MlflowClient) -> bool:
    found = runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")
    return any(r.info.status == "RUNNING" and epochs_logged(client, r.info.run_id) for r in found)


def _mid_grid(client: MlflowClient) -> bool:
    cells = runs(client, f"tags.`{schema.STAGE}` = 'multimodal'")
    return any(r.info.status == "FINISHED" for r in cells) and any(
        r.info.status == "RUNNING" and epochs_logged(client, r.info.run_id) for r in cells
    )


# The analysis is over in a moment, too quick to catch by polling: the process kills
# itself there, with the analysis child RUNNING (its params and report logged).
ANALYSING = (
    "import analysis.analyze\n"
    "analysis.analyze.headline_metrics = lambda r: os.kill(os.getpid(), signal.SIGKILL)\n"
)


@pytest.mark.parametrize(
    "moment",
    [_pretraining, _mid_grid, ANALYSING],
    ids=["during pretraining", "mid-grid", "during the analysis"],
)
def test_a_pipeline_killed_anywhere_resumes_into_its_own_experiment(
    moment: Callable[[MlflowClient], bool] | str,
    tracking_uri: str,
    subprocess_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Regression: a resumed pipeline created its new children (cells, the analysis) in the
    Default experiment, so the analysis saw part of the seeds, or none."""
    client = MlflowClient(tracking_uri)
    if isinstance(moment, str):
        killed_at(moment, PIPELINE, subprocess_env)
    else:
        proc = tsp_process(PIPELINE, subprocess_env)
        wait_for(moment.__name__, lambda: moment(client), proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL  # killed there, not finished already
    (parent,) = runs(client, f"tags.`{schema.STAGE}` = 'pipeline'")
    main(["runs", "reap"])  # the dead runs are marked KILLED, with tsp.error "reaped ..."
    assert schema.ERROR in client.get_run(parent.info.run_id).data.tags
    main([*PIPELINE, "--resume", parent.info.run_id])
    capsys.readouterr()
    tags = client.get_run(parent.info.run_id).data.tags
    assert schema.ERROR not in tags and schema.REAPED not in tags  # no stale error
    assert "reaped" in tags[schema.INTERRUPTED]  # why it had stopped, kept as history
    experiment = parent.info.experiment_id
    assert experiment != "0"
    everything = runs(client, "")
    assert {r.info.experiment_id for r in everything} == {experiment}  # nothing in Default
    kids = children(client, parent.info.run_id)
    finished = [r for r in kids if r.info.status == "FINISHED"]
    cells = [r for r in finished if r.data.tags[schema.STAGE] == "multimodal"]
    keys = sorted((r.data.tags[schema.CONDITION], r.data.tags[schema.SEED]) for r in cells)
    assert keys == [("pretrained", "0"), ("pretrained", "1"), ("scratch", "0"), ("scratch", "1")]
    analyses = [r for r in finished if r.data.tags[schema.STAGE] == "analysis"]
    assert analyses and all(
        r.data.metrics["n_pairs/test/audio-image/accuracy"] == 2 for r in analyses
    )
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    # resuming a finished pipeline again trains nothing
    before = {r.info.run_id for r in runs(client, f"tags.`{schema.STAGE}` != 'analysis'")}
    main([*PIPELINE, "--resume", parent.info.run_id])
    assert "finished earlier" in capsys.readouterr().out
    assert {r.info.run_id for r in runs(client, f"tags.`{schema.STAGE}` != 'analysis'")} == before


def killed_at(patch: str, args: list[str], env: dict[str, str]) -> None:
    """Run ``tsp <args>`` in a process where ``patch`` (Python, with os, signal and
    MlflowClient imported) makes it SIGKILL itself at one exact point; check it died so."""
    code = (
        "import os, signal\nfrom mlflow import MlflowClient\n"
        + patch
        + f"from tsp_mlflow.cli import main\nmain({args!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_a_registration_cut_by_sigkill_is_completed_by_the_resume(
    tracking_uri: str, subprocess_env: dict[str, str]
) -> None:
    """Regression: a SIGKILL between creating the version and setting @champion left a
    version with no alias; the resume then failed on the missing alias."""
    client = MlflowClient(tracking_uri)
    args = [
        "pretrain",
        "--modality",
        "image",
        "--epochs",
        "1",
        "--overrides",
        "model.encoders.image.width=4 trainer.batch_size=128",
    ]
    # A real SIGKILL at exactly that point: the process kills itself instead of aliasing.
    killed_at(
        "MlflowClient.set_registered_model_alias = "
        "lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n",
        args,
        subprocess_env,
    )
    (run,) = runs(client, f"tags.`{schema.STAGE}` = 'pretrain'")
    assert run.info.status == "RUNNING"
    (version,) = client.search_model_versions("name = 'avdigits-image-encoder'")
    with pytest.raises(Exception, match="alias"):
        client.get_model_version_by_alias("avdigits-image-encoder", "champion")

    main([*args, "--resume", run.info.run_id])
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert [v.version for v in client.search_model_versions("name = 'avdigits-image-encoder'")] == [
        version.version
    ]  # completed, not registered twice
    champion = client.get_model_version_by_alias("avdigits-image-encoder", "champion")
    assert champion.version == version.version and champion.run_id == run.info.run_id


MONITORED = [*ARGS[:-1], ARGS[-1] + " monitoring.every_n_steps=5"]
KILL_AT = {  # MlflowClient.log_batch kills its process, before sending, when this holds
    "after the checkpoint's upload": "'time/epoch_s' in keys",
    "after the epoch's batch": "any(k.startswith('monitor/') for k in keys)",
}


@pytest.mark.parametrize("moment", list(KILL_AT))
def test_monitoring_samples_are_logged_exactly_once_across_a_sigkill(
    moment: str, tracking_uri: str, subprocess_env: dict[str, str]
) -> None:
    """Regression: a SIGKILL after the checkpoint upload or after the epoch batch lost
    that epoch's monitor/* samples: the resume retrains only later epochs."""
    client = MlflowClient(tracking_uri)
    main(MONITORED)  # the uninterrupted reference
    (reference,) = runs(client, "")
    killed_at(
        "original = MlflowClient.log_batch\n"
        "def log_batch(self, run_id, metrics=(), *args, **kwargs):\n"
        "    keys = {m.key for m in metrics}\n"
        f"    if {KILL_AT[moment]}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return original(self, run_id, metrics, *args, **kwargs)\n"
        "MlflowClient.log_batch = log_batch\n",
        MONITORED,
        subprocess_env,
    )
    (cut,) = [r for r in runs(client, "") if r.info.run_id != reference.info.run_id]
    main([*MONITORED, "--resume", cut.info.run_id])
    resumed = client.get_run(cut.info.run_id)
    assert resumed.info.status == "FINISHED"
    keys = [k for k in reference.data.metrics if k.startswith(schema.MONITOR_PREFIX + "/")]
    assert keys and sorted(keys) == sorted(
        k for k in resumed.data.metrics if k.startswith(schema.MONITOR_PREFIX + "/")
    )
    for key in keys:
        want = sorted(m.step for m in client.get_metric_history(reference.info.run_id, key))
        have = sorted(m.step for m in client.get_metric_history(cut.info.run_id, key))
        assert have == want, key  # every sample, each once
