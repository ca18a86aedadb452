"""The training orchestrator: one training run from its opening to its summary.

:func:`training_run` opens (or reopens) the run and logs what every run logs first;
:func:`train_and_test` fits with per-epoch writes and checkpoints
(:class:`~tsp_mlflow.training.epoch_writer.EpochWriter`), restores the best-by-validation
weights, tests every modality pattern and logs the summary, the bootstrap and the figures.
The recipes (pretrain, multimodal, contrastive) call these two and nothing else to train.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from tsp_mlflow.config import to_plain
from tsp_mlflow.data.batch import all_patterns, pattern_name
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.recipes.setup import (
    fit_tokenizers,
    log_dataset_inputs,
    make_loaders,
    make_optimizer,
)
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.background import BackgroundWriter, writes_in_background
from tsp_mlflow.tracking.epoch_log import EpochLogger, UnsentSamples, samples_of
from tsp_mlflow.tracking.params import log_config
from tsp_mlflow.tracking.resume import claim, clear_stop_reason
from tsp_mlflow.tracking.session import tracked_run
from tsp_mlflow.training.checkpoint_artifacts import (
    RunCheckpointer,
    latest_checkpoint,
    logged_epochs,
)
from tsp_mlflow.training.distributed import backend, broadcast_text, current, shard_loaders
from tsp_mlflow.training.epoch_writer import EpochWriter
from tsp_mlflow.training.finetune import parameter_counts
from tsp_mlflow.training.gradients import GradientStrategy
from tsp_mlflow.training.loop import EpochMetrics, FitResult, evaluate, fit, has_missing
from tsp_mlflow.training.monitoring import MonitoringSettings, TrainingMonitor
from tsp_mlflow.training.progress import EpochProgress
from tsp_mlflow.training.resampling import bootstrap_test_metrics
from tsp_mlflow.training.run_figures import log_run_figures
from tsp_mlflow.training.tasks import Task
from tsp_mlflow.training.training_state import TrainingState, capture, restore

# Called after each epoch's logging as (epoch, metrics, seconds); a sweep reports to Optuna.
EpochHook = Callable[[int, EpochMetrics, float], None]


@contextlib.contextmanager
def training_run(
    cfg: DictConfig,
    config: dict[str, Any],
    datasets: dict[str, Any],
    *,
    run_name: str,
    tags: dict[str, str],
    nested: bool,
    run_id: str | None,
    parent_run_id: str | None,
    resume: str | None,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[str, dict[str, DataLoader]]]:
    """Open (or reopen, for ``resume``) a training run and log what every training run
    logs first: the config and the dataset inputs. Yields the run id and the loaders.

    ``run_id`` fills a run created beforehand (a sweep's trial); ``parent_run_id`` nests
    the run under a parent this process does not hold open. Under torchrun only rank 0
    opens the run; the other ranks receive its id and open nothing.
    """
    loaders = make_loaders(cfg.trainer, datasets, generator, device)
    ranks = current()
    if not ranks.is_main:
        received = broadcast_text(None, ranks)
        if not received:
            raise RuntimeError("rank 0 failed before its MLflow run started; see its output")
        yield received, loaders
        return
    sent = False
    try:
        with tracked_run(
            run_name=run_name,
            tags=tags,
            nested=nested,
            run_id=run_id or resume,
            parent_run_id=parent_run_id,
        ) as run:
            if resume:
                claim(resume)
            if ranks.enabled:  # tags, not params: a resume may use another process count
                mlflow.set_tags(
                    {
                        schema.DISTRIBUTED_WORLD_SIZE: str(ranks.world_size),
                        schema.DISTRIBUTED_BACKEND: backend(device),
                    }
                )
            log_config(config, resumed=bool(resume))
            if not (resume and run.inputs.dataset_inputs):  # a resumed run may have them
                log_dataset_inputs(datasets, cfg.data.name)
            broadcast_text(run.info.run_id, ranks)
            sent = True
            yield run.info.run_id, loaders
    except BaseException:
        if ranks.enabled and not sent:  # the others wait for the run id: release them
            broadcast_text("", ranks)
        raise


def train_and_test(
    cfg: DictConfig,
    model: LateFusionModel,
    loaders: dict[str, DataLoader],
    task: Task,
    device: torch.device,
    *,
    started: float,
    on_epoch_end: EpochHook | None = None,
    resume_run_id: str | None = None,
    gradient: GradientStrategy | None = None,
    patterns: Sequence[Sequence[str]] | None = None,
) -> FitResult:
    """Fit with per-epoch logging and checkpoints, restore the best-by-validation weights,
    log test metrics.

    Every modality pattern is evaluated; the full pattern's ``task.monitor`` metric on val
    picks the best epoch (``patterns`` narrows them: contrastive pretraining evaluates only
    the full one). ``gradient`` is the update rule (default: the multimodal loss only).
    ``on_epoch_end`` runs after each epoch is logged; it may raise
    :class:`~tsp_mlflow.errors.RunStopped` to end the run early (a pruned trial).

    Each epoch's checkpoint is written *before* its metrics, so every logged epoch has a
    checkpoint. ``resume_run_id`` (the active run) continues from its newest checkpoint:
    epochs the run lacks metrics for are logged from the checkpoint's history, and epochs
    it already has are not logged twice, so the history ends with each epoch exactly once.
    """
    patterns = patterns or all_patterns(model.modalities)
    fit_tokenizers(model, loaders["train"].dataset)
    model.to(device)  # before the optimizer state is restored onto the parameters
    lrs = to_plain(cfg.finetune.lr) if "finetune" in cfg else {}
    optimizer, scheduler = make_optimizer(cfg.optim, cfg.scheduler, model, lrs)
    ranks = current()
    loaders = shard_loaders(loaders, ranks)  # under torchrun: this rank's rows
    generator = loaders["train"].generator
    epochs = cfg.trainer.epochs
    skip_train = bool(cfg.trainer.get("skip_train", False))
    skip_test = bool(cfg.trainer.get("skip_test", False))
    full = pattern_name(model.modalities, model.modalities)
    state, logged, earlier_s = FitResult(), set[int](), 0.0
    # Under torchrun every rank continues from the same checkpoint; rank 0 alone logs.
    saved = latest_checkpoint(resume_run_id) if resume_run_id is not None else None
    if saved is not None:
        state = restore(saved, model, optimizer, scheduler, generator, device)
    train = functools.partial(
        fit,
        model,
        loaders["train"],
        loaders["val"],
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=epochs,
        patterns=patterns,
        task=task,
        device=device,
        resume_from=state,
        monitor_pattern=full,
        gradient=gradient,
    )
    if skip_train:  # evaluated as built: no step, no checkpoint, nothing to resume
        train = functools.partial(_untrained, model)
    if not ranks.is_main:  # the other ranks train alongside rank 0 and log nothing
        result = train()
        model.load_state_dict(result.best_state)
        if not skip_test:
            evaluate(
                model,
                loaders["test"],
                patterns,
                device,
                task,
                observed=has_missing(loaders["test"]),
            )
        return result
    run = mlflow.active_run()
    assert run is not None
    run_id = resume_run_id or run.info.run_id
    if skip_train:
        mlflow.set_tag(schema.SKIP_TRAIN, "true")
    ckpt = cfg.trainer.checkpoint
    checkpointer = RunCheckpointer(run_id, ckpt.every_n_epochs, epochs, ckpt.min_interval_s)
    if resume_run_id is not None:
        logged = logged_epochs(resume_run_id)
        if saved is not None:
            earlier_s = float(saved.extra.get("elapsed_s", 0.0))
        checkpointer.adopt(saved.epoch if saved else None)
        mark_resumed(resume_run_id, saved.epoch if saved else 0)
        print(f"resuming run {resume_run_id} after epoch {state.epochs_run}", flush=True)
    logger = EpochLogger(run_id, logged)
    logger.replay(state.history, state.epoch_seconds)
    unsent = UnsentSamples()
    if saved is not None:  # samples the checkpoint holds but a SIGKILL kept from the run
        logger.send_missing_samples(samples_of(saved.extra))
    settings = MonitoringSettings.from_config(cfg.get("monitoring"))
    monitor = (
        TrainingMonitor(model, settings)
        if settings.enabled
        and not skip_train
        and (settings.gradient_norm or settings.weight_norm or settings.activations)
        else None
    )

    def snapshot(epoch: int) -> TrainingState:
        taken = capture(epoch, model, optimizer, scheduler, generator, state, device)
        taken.extra["elapsed_s"] = earlier_s + time.perf_counter() - started
        return taken

    background = writes_in_background(cfg.tracking.background_writes, device.type)
    progress = EpochProgress(
        run.info.run_name or run_id,
        epochs,
        f"val/{full}/{task.monitor}",
        first_epoch=state.epochs_run + 1,
    )
    with (
        system_metrics(run_id, settings),
        BackgroundWriter(enabled=background) as writer,
        progress,
    ):
        epochs_out = EpochWriter(logger, checkpointer, writer, snapshot, monitor, unsent)

        def epoch_ended(epoch: int, metrics: EpochMetrics, seconds: float) -> None:
            epochs_out.epoch_ended(epoch, metrics, seconds)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics, seconds)

        try:
            result = train(on_epoch_end=epoch_ended, monitor=monitor, progress=progress)
        except KeyboardInterrupt:  # SIGINT/SIGTERM: the last finished epoch is saved first
            epochs_out.save_last_epoch(interrupted=True)
            raise
        except Exception:  # the run fails: keep what it finished, if the store still answers
            epochs_out.save_last_epoch(interrupted=False)
            raise
        finally:
            if monitor is not None:
                monitor.close()
    model.load_state_dict(result.best_state)
    latency: list[float] = []
    test: dict[str, dict[str, float]] | None = None
    outputs: dict[str, torch.Tensor] = {}
    if not skip_test:
        test = evaluate(
            model,
            loaders["test"],
            patterns,
            device,
            task,
            observed=has_missing(loaders["test"]),
            latency=latency,
            outputs=outputs,
        )
    # A run resumed after these were logged (killed while closing) logs none of them twice.
    done = set(mlflow.get_run(resume_run_id).data.metrics) if resume_run_id else set()
    if test is not None:
        logger.log_test(test, result.best_epoch, skip=done)
    # Fusion runs only (multimodal.yaml's test_bootstrap; pretrain configs have no such key).
    resamples = int(cfg.get("test_bootstrap", 0) or 0)
    if test is not None and resamples > 0 and outputs:
        logged = {f.path for f in MlflowClient().list_artifacts(run_id)} if resume_run_id else set()
        if schema.TEST_BOOTSTRAP_ARTIFACT not in logged:
            patterns = {
                k: v for k, v in outputs["patterns"].items() if k != schema.OBSERVED_PATTERN
            }
            mlflow.log_dict(
                bootstrap_test_metrics(task, patterns, outputs["target"], resamples),
                schema.TEST_BOOTSTRAP_ARTIFACT,
            )
    summary = {
        schema.BEST_EPOCH: result.best_epoch,
        schema.BEST_VALUE: result.best_value,
        schema.TIME_TRAIN_TOTAL: result.train_seconds,
        # Over every process the run took; the time between its last checkpoint and a
        # crash is unknowable and not counted.
        schema.TIME_TOTAL: earlier_s + time.perf_counter() - started,
        **parameter_counts(model),
    }
    if latency:
        summary[schema.TIME_TEST_BATCH_MS] = 1000 * sum(latency) / len(latency)
    mlflow.log_metrics({k: v for k, v in summary.items() if k not in done})
    try:  # a figure that cannot be drawn must not fail a run that trained and tested
        test_data = loaders["test"].dataset
        log_run_figures(
            result.history,
            test,
            (outputs["logits"], outputs["target"]) if outputs else None,
            task,
            full,
            result.best_epoch,
            # MM-IMDb's genres by name; a missing-modality wrapper holds the dataset inside
            label_names=getattr(getattr(test_data, "dataset", test_data), "target_names", ()),
        )
    except Exception as err:
        print(f"warning: run figures not logged: {type(err).__name__}: {err}", file=sys.stderr)
    return result


def _untrained(model: LateFusionModel, **_: Any) -> FitResult:
    """``trainer.skip_train``: the model as built, as if its best epoch were epoch 0."""
    return FitResult(best_state=copy.deepcopy(model.state_dict()))


@contextlib.contextmanager
def system_metrics(run_id: str, settings: MonitoringSettings) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network, GPU when present) sampled on
    a thread into the run while training, when ``monitoring.system_metrics`` is on."""
    if not (settings.enabled and settings.system_metrics):
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    sampler = SystemMetricsMonitor(  # a resumed run's samples go on after its earlier ones
        run_id, sampling_interval=float(settings.system_metrics_interval_s), resume_logging=True
    )
    sampler.start()
    try:
        yield
    finally:
        sampler.finish()


def mark_resumed(run_id: str, epoch: int) -> None:
    """The run is running again: its old failure reason moves to ``tsp.interrupted``, so a
    resumed run that finishes carries no ``tsp.error``."""
    clear_stop_reason(run_id)
    MlflowClient().set_tag(run_id, schema.RESUMED, str(epoch))
