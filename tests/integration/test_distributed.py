"""Acceptance: `torchrun --nproc_per_node=2` trains with DDP on CPU (gloo). Rank 0 alone
talks to MLflow: one run, each epoch's metrics once, one checkpoint, one registration;
and the two-process run reproduces the single-process run within the stated tolerance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.flow import artifact_paths, runs
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
NARROW = "model.encoders.audio.width=4 model.encoders.image.width=4"
# No batch norm and no dropout (both differ by rank by design; docs/deploy.md), SGD (Adam
# turns rounding-level gradient differences into full-size steps): what is left to differ
# is the order of float additions. Batch 75 splits 38/37 across the ranks and the last
# batch (25 of 1150 rows) 13/12, so the weighting of uneven shards is exercised too.
EXACT = (
    "model/encoder@model.encoders.audio=mlp model/encoder@model.encoders.image=mlp "
    "model.encoders.audio.in_features=12544 model.encoders.image.in_features=784 "
    "model.encoders.audio.hidden=[64] model.encoders.image.hidden=[64] model.head.hidden=[] "
    "model.encoders.audio.dropout=0 model.encoders.image.dropout=0 model.head.dropout=0 "
    "optim._target_=torch.optim.SGD optim.lr=0.1 +optim.momentum=0.9 trainer.batch_size=75 "
    "representations=false trainer.checkpoint.min_interval_s=0"
)
TOLERANCE = 1e-4  # relative, on every logged loss (docs/deploy.md)


def launch(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_torchrun_pretrain_is_one_run_logged_once_by_rank_zero(
    subprocess_env: dict[str, str], tracking_uri: str, tmp_path: Path
) -> None:
    epochs = 2
    done = launch(
        [
            *TORCHRUN,
            "-m",
            "tsp_mlflow",
            "pretrain",
            "--modality",
            "audio",
            "--epochs",
            str(epochs),
            "--overrides",
            f"{NARROW} trainer.batch_size=64 trainer.checkpoint.min_interval_s=0",
        ],
        subprocess_env,
        tmp_path,
    )
    assert done.stdout.count("pretrain run ") == 1  # the closing line, from rank 0 only

    client = MlflowClient(tracking_uri)
    (run,) = runs(client, "")  # exactly one run, whatever its stage
    assert run.info.status == "FINISHED"
    assert run.data.tags[schema.STAGE] == schema.STAGE_PRETRAIN
    assert run.data.tags[schema.DISTRIBUTED_WORLD_SIZE] == "2"
    assert run.data.tags[schema.DISTRIBUTED_BACKEND] == "gloo"
    for key in ("train/loss", "val/audio/accuracy", "val/audio/loss", schema.TIME_EPOCH):
        assert [step for step, _ in history(client, run.info.run_id, key)] == [1, 2], key
    files = artifact_paths(client, run.info.run_id)
    assert f"checkpoints/epoch-{epochs:04d}/state.safetensors" in files
    assert not any(f.startswith("checkpoints/epoch-0001/") for f in files)  # newest only
    assert "encoder/model.safetensors" in files
    (version,) = client.search_model_versions("name='avdigits-audio-encoder'")
    assert version.run_id == run.info.run_id


def test_torchrun_multimodal_matches_the_single_process_run(
    subprocess_env: dict[str, str], tracking_uri: str, tmp_path: Path
) -> None:
    args = ["multimodal", "--epochs", "3", "--overrides", EXACT]
    launch([sys.executable, "-m", "tsp_mlflow", *args], subprocess_env, tmp_path)
    launch([*TORCHRUN, "-m", "tsp_mlflow", *args], subprocess_env, tmp_path)

    client = MlflowClient(tracking_uri)
    found = runs(client, "")
    assert len(found) == 2  # one per launch: the second rank opened none
    by_world = {r.data.tags.get(schema.DISTRIBUTED_WORLD_SIZE, "1"): r for r in found}
    single, ddp = by_world["1"], by_world["2"]
    assert ddp.info.status == "FINISHED"
    assert "checkpoints/epoch-0003/state.safetensors" in artifact_paths(client, ddp.info.run_id)
    for key in ("train/loss", "val/audio-image/loss", "val/audio/loss", "val/image/loss"):
        ours, theirs = (
            history(client, ddp.info.run_id, key),
            history(client, single.info.run_id, key),
        )
        assert [s for s, _ in ours] == [1, 2, 3], key  # each epoch once
        for (_, a), (_, b) in zip(ours, theirs, strict=True):
            assert a == pytest.approx(b, rel=TOLERANCE), key
    # The model learned (a comparison of two untrained models would prove little), and the
    # test metrics, over rows gathered from both ranks, agree too.
    losses = [v for _, v in history(client, single.info.run_id, "train/loss")]
    assert losses[-1] < losses[0] - 0.02  # 100x the tolerance
    for key in ("test/audio-image/loss", "test/audio/loss", "test/image/loss"):
        assert ddp.data.metrics[key] == pytest.approx(single.data.metrics[key], rel=TOLERANCE)
    (val,) = [i for i in ddp.inputs.dataset_inputs if i.dataset.name == "avdigits-val"]
    row = 1 / int({t.key: t.value for t in val.tags}["tsp.rows"])  # one argmax may flip on a tie
    for key in ("val/audio-image/accuracy", "test/audio-image/accuracy"):
        assert abs(ddp.data.metrics[key] - single.data.metrics[key]) <= 2 * row, key


def test_torchrun_resumes_a_single_process_run_from_its_checkpoint(
    subprocess_env: dict[str, str],
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The global batches do not depend on the process count, so a run interrupted in one
    process continues under torchrun: rank 0 claims it, every rank loads its checkpoint."""
    import os
    import signal

    from tsp_mlflow.cli import main
    from tsp_mlflow.tracking.epoch_log import EpochLogger

    log_epoch = EpochLogger.log_epoch

    def interrupted(self, epoch, metrics, seconds, **kwargs):  # type: ignore[no-untyped-def]
        log_epoch(self, epoch, metrics, seconds, **kwargs)
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    args = [
        "multimodal",
        "--epochs",
        "3",
        "--overrides",
        f"{NARROW} debug=tiny trainer.checkpoint.min_interval_s=0",
    ]
    monkeypatch.setattr(EpochLogger, "log_epoch", interrupted)
    with pytest.raises(SystemExit):
        main(args)
    monkeypatch.setattr(EpochLogger, "log_epoch", log_epoch)
    client = MlflowClient(tracking_uri)
    (run,) = runs(client, "")
    assert run.info.status == "KILLED"

    launch(
        [*TORCHRUN, "-m", "tsp_mlflow", *args, "--resume", run.info.run_id],
        subprocess_env,
        tmp_path,
    )
    (done,) = runs(client, "")  # the same run, continued
    assert done.info.status == "FINISHED" and done.data.tags[schema.RESUMED] == "1"
    assert done.data.tags[schema.DISTRIBUTED_WORLD_SIZE] == "2"
    for key in ("train/loss", "val/audio-image/accuracy", schema.TIME_EPOCH):
        assert [s for s, _ in history(client, done.info.run_id, key)] == [1, 2, 3], key
    assert "test/audio-image/accuracy" in done.data.metrics
