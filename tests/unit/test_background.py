"""The background writer: in order, one job in flight, errors surface in the caller."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking.background import BackgroundWriter, writes_in_background


def test_jobs_run_in_order_off_the_calling_thread_one_at_a_time() -> None:
    release = threading.Event()
    seen: list[tuple[str, str]] = []

    def job(name: str, wait: bool = False) -> None:
        if wait:
            assert release.wait(10)
        seen.append((name, threading.current_thread().name))

    with BackgroundWriter() as writer:
        writer.submit(lambda: job("first", wait=True))
        assert seen == []  # submit returned while the first job still waits
        second = threading.Thread(target=writer.submit, args=(lambda: job("second"),))
        second.start()
        second.join(0.3)
        assert second.is_alive()  # the next submit waits for the job in flight
        release.set()
        second.join(10)
    assert [name for name, _ in seen] == ["first", "second"]
    assert all(thread.startswith("tsp-tracking") for _, thread in seen)


def test_a_failed_job_is_raised_by_the_next_submit_and_stops_later_jobs() -> None:
    ran: list[str] = []

    def fail() -> None:
        raise ConnectionError("server gone")

    with BackgroundWriter() as writer:
        writer.submit(fail)
        with pytest.raises(ConnectionError, match="server gone"):
            writer.submit(lambda: ran.append("after"))
        writer.drain()  # the error was delivered once
    assert ran == []


def test_leaving_with_an_error_waits_for_the_job_and_keeps_that_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = threading.Event()

    def slow_failure() -> None:
        done.wait(0.2)
        raise ConnectionError("upload failed")

    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(KeyboardInterrupt),
        BackgroundWriter() as w,
    ):
        w.submit(slow_failure)
        raise KeyboardInterrupt
    assert "upload failed" in caplog.text  # logged, not raised over the interrupt


def test_disabled_runs_each_job_inline() -> None:
    threads: list[str] = []
    with BackgroundWriter(enabled=False) as writer:
        writer.submit(lambda: threads.append(threading.current_thread().name))
        assert threads == [threading.current_thread().name]


def test_auto_writes_in_the_background_on_accelerators_only() -> None:
    assert writes_in_background("auto", "cpu") is False
    assert writes_in_background("auto", "cuda") is True
    assert writes_in_background(True, "cpu") is True
    assert writes_in_background(False, "cuda") is False
    with pytest.raises(UserInputError, match="auto, true or false"):
        writes_in_background("sometimes", "cpu")


@pytest.mark.slow
def test_a_run_with_background_writes_logs_every_epoch_once(tracking_uri: str) -> None:
    from mlflow import MlflowClient

    from tsp_mlflow.cli import main
    from tsp_mlflow.tracking import schema

    main(
        [
            "multimodal",
            "--epochs",
            "3",
            "--overrides",
            "debug=tiny trainer.epochs=3 tracking.background_writes=true "
            "model.encoders.audio.width=4 model.encoders.image.width=4",
        ]
    )
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/audio-image/accuracy", "val/audio/accuracy", "time/epoch_s"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3]
    path = client.download_artifacts(run.info.run_id, schema.METRICS_ARTIFACT)
    document = json.loads(Path(path).read_text())
    assert sorted(document["epochs"]) == ["1", "2", "3"] and document["test"]
    checkpoints = {f.path for f in client.list_artifacts(run.info.run_id, schema.CHECKPOINT_DIR)}
    assert checkpoints == {schema.checkpoint_path(3)}


def test_epoch_metrics_are_queued_and_sent_whole_with_each_checkpoint(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from tsp_mlflow.tracking import epoch_log
    from tsp_mlflow.tracking.epoch_log import EpochLogger

    client = MlflowClient(tracking_uri)
    metrics = {"train": {"all": {"loss": 0.5}}, "val": {"audio": {"accuracy": 0.75}}}
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        logger = EpochLogger(run_id)

        def steps(key: str = "val/audio/accuracy") -> list[int]:
            return sorted(m.step for m in client.get_metric_history(run_id, key))

        logger.log_epoch(1, metrics, 1.0, send=False)
        logger.log_epoch(2, metrics, 1.0, send=False)
        assert steps() == []  # queued: no checkpoint holds these epochs yet
        logger.log_epoch(3, metrics, 1.0, send=True)  # a checkpoint of epoch 3 was written
        assert steps() == [1, 2, 3]  # one call, each epoch at its own step
        logger.log_epoch(4, metrics, 1.0, send=False)
        logger.log_epoch(4, metrics, 1.0, send=False)  # never queued twice
        logger.log_test({"audio": {"accuracy": 0.5}}, best_epoch=3)  # sends what is queued
        assert steps() == [1, 2, 3, 4] and steps("test/audio/accuracy") == [3]

        # Calls hold whole epochs: 3 metrics an epoch, at most 7 a call -> epochs 2 + 2 + 1.
        monkeypatch.setattr(epoch_log, "MAX_METRICS_PER_CALL", 7)
        calls: list[list[int]] = []
        send = logger.client.log_batch
        monkeypatch.setattr(
            logger.client,
            "log_batch",
            lambda run, metrics, **kw: (
                calls.append(sorted({m.step for m in metrics})),
                send(run, metrics=metrics, **kw),
            ),
        )
        for epoch in (5, 6, 7, 8):
            logger.log_epoch(epoch, metrics, 1.0, send=False)
        logger.log_epoch(9, metrics, 1.0, send=True)
        assert calls == [[5, 6], [7, 8], [9]] and steps("time/epoch_s") == list(range(1, 10))

        # Monitoring samples ride along but never split an epoch: they go after it, alone.
        calls.clear()
        samples = [Metric("monitor/grad_norm/head", 1.0, 0, step) for step in range(100, 120)]
        logger.log_epoch(10, metrics, 1.0, send=True, extra=samples)
        assert calls == [[10], list(range(100, 120))]
        assert steps("monitor/grad_norm/head") == list(range(100, 120))
