"""Checkpoints: exact round trips without pickle, torn files refused, training continues
exactly where it stopped."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tsp_mlflow.training import training_state
from tsp_mlflow.training.loop import FitResult
from tsp_mlflow.training.training_state import CheckpointError


def tiny_training() -> tuple[torch.nn.Module, torch.optim.Optimizer, object, torch.Generator]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=0)
    return model, optimizer, scheduler, torch.Generator().manual_seed(1)


def step(model, optimizer, scheduler, generator) -> float:  # type: ignore[no-untyped-def]
    # Every RNG shapes the step: data (loader generator), dropout (torch), NumPy, Python.
    x = torch.randn(16, 4, generator=generator) * (1 + np.random.rand()) + random.random()
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step(-loss.item())
    return loss.item()


def test_training_continues_exactly_where_a_checkpoint_left_it(tmp_path: Path) -> None:
    model, optimizer, scheduler, generator = tiny_training()
    for _ in range(3):
        step(model, optimizer, scheduler, generator)
    fit = FitResult(
        best_epoch=2,
        best_value=float("nan"),
        epochs_run=3,
        train_seconds=1.5,
        best_state={k: v.clone() for k, v in model.state_dict().items()},
        history=[{"val": {"audio": {"accuracy": 0.5}}}] * 3,
        epoch_seconds=[0.5] * 3,
    )
    saved = training_state.save(
        training_state.capture(3, model, optimizer, scheduler, generator, fit), tmp_path
    )
    after = [step(model, optimizer, scheduler, generator) for _ in range(4)]  # the truth

    fresh, opt2, sched2, gen2 = tiny_training()
    for _ in range(5):  # other state everywhere: every RNG, moments, the plateau counter
        step(fresh, opt2, sched2, gen2)
    state = training_state.load(saved)
    restored = training_state.restore(state, fresh, opt2, sched2, gen2, torch.device("cpu"))
    assert [step(fresh, opt2, sched2, gen2) for _ in range(4)] == after  # bit for bit
    assert restored.epochs_run == 3 and restored.best_epoch == 2 and restored.train_seconds == 1.5
    assert np.isnan(restored.best_value) and restored.epoch_seconds == [0.5] * 3
    assert restored.history == fit.history
    assert state.optimizer["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    assert set(state.optimizer["state"]) == {0, 1, 2, 3}  # int keys stay ints


def test_a_checkpoint_is_plain_json_and_safetensors(tmp_path: Path) -> None:
    model, optimizer, scheduler, generator = tiny_training()
    step(model, optimizer, scheduler, generator)
    training_state.save(
        training_state.capture(1, model, optimizer, scheduler, generator, FitResult()), tmp_path
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.safetensors"]
    header = json.loads((tmp_path / "state.json").read_text())
    assert header["epoch"] == 1 and header["format"] == 1 and len(header["sha256"]) == 64


def test_torn_or_altered_checkpoints_are_refused(tmp_path: Path) -> None:
    model, optimizer, scheduler, generator = tiny_training()
    training_state.save(
        training_state.capture(1, model, optimizer, scheduler, generator, FitResult()), tmp_path
    )
    tensors = tmp_path / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-8])  # cut short mid-upload
    with pytest.raises(CheckpointError, match="torn .* or altered"):
        training_state.load(tmp_path)
    tensors.unlink()
    with pytest.raises(CheckpointError, match="is incomplete"):
        training_state.load(tmp_path)


def test_a_torn_newest_checkpoint_falls_back_and_the_good_one_survives(tracking_uri: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    from tsp_mlflow.tracking import schema
    from tsp_mlflow.training.checkpoint_artifacts import (
        RunCheckpointer,
        checkpoint_paths,
        latest_checkpoint,
    )

    model, optimizer, scheduler, generator = tiny_training()
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        saver = RunCheckpointer(run_id, every_n_epochs=1, last_epoch=3)
        for epoch in (1, 2):
            saver.offer(
                training_state.capture(epoch, model, optimizer, scheduler, generator, FitResult())
            )
        assert [e for e, _ in checkpoint_paths(run_id)] == [2]  # the superseded one is gone
        # As a crash mid-upload leaves them: a whole epoch-1 checkpoint beside a torn epoch 2.
        RunCheckpointer(run_id, 1, 3).offer(
            training_state.capture(1, model, optimizer, scheduler, generator, FitResult())
        )
        torn = Path(mlflow.get_artifact_uri().removeprefix("file://")) / schema.checkpoint_path(2)
        (torn / "state.safetensors").write_bytes(b"cut")

        loaded = latest_checkpoint(run_id)
        assert loaded is not None and loaded.epoch == 1
        resumed = RunCheckpointer(run_id, every_n_epochs=1, last_epoch=3)
        resumed.adopt(loaded.epoch)
        assert [e for e, _ in checkpoint_paths(run_id)] == [1]  # torn one deleted, good kept
        resumed.offer(
            training_state.capture(2, model, optimizer, scheduler, generator, FitResult())
        )
        assert [e for e, _ in checkpoint_paths(run_id)] == [2]
        assert latest_checkpoint(run_id).epoch == 2  # type: ignore[union-attr]
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"


def test_the_interval_holds_saves_back_but_the_last_epoch_and_a_flush_always_write(
    tracking_uri: str,
) -> None:
    import mlflow

    from tsp_mlflow.training.checkpoint_artifacts import RunCheckpointer, checkpoint_paths

    model, optimizer, scheduler, generator = tiny_training()
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        saver = RunCheckpointer(run_id, every_n_epochs=1, last_epoch=4, min_interval_s=3600)

        def state(epoch: int) -> training_state.TrainingState:
            return training_state.capture(
                epoch, model, optimizer, scheduler, generator, FitResult()
            )

        assert saver.offer(state(1)) is False and saver.offer(state(2)) is False
        assert checkpoint_paths(run_id) == []  # within the interval: held in memory only
        assert saver.flush() is True  # as on Ctrl-C: the newest finished epoch is written
        assert [e for e, _ in checkpoint_paths(run_id)] == [2]
        assert saver.flush() is False  # nothing newer to write
        assert saver.offer(state(3)) is False
        assert saver.offer(state(4)) is True  # the last epoch is always written
        assert [e for e, _ in checkpoint_paths(run_id)] == [4]
        every = RunCheckpointer(run_id, every_n_epochs=2, last_epoch=9, min_interval_s=0)
        assert [every.offer(state(e)) for e in (5, 6, 7)] == [False, True, False]
