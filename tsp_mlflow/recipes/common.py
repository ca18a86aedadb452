"""Small setup steps that every training recipe performs identically."""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from mlflow import MlflowClient
from mlflow.entities import Metric
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from tsp_mlflow.config import to_plain
from tsp_mlflow.data.base import MultimodalDataset
from tsp_mlflow.data.batch import SPLITS, all_patterns, pattern_name
from tsp_mlflow.data.checks import expand_root
from tsp_mlflow.data.missing import WithMissingModalities, missing_mask, missing_rates
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.models.serialization import encoder_spec, save_encoder
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.background import BackgroundWriter, writes_in_background
from tsp_mlflow.tracking.checkpoints import RunCheckpointer, latest_checkpoint, logged_epochs
from tsp_mlflow.tracking.datasets import log_datasets
from tsp_mlflow.tracking.epoch_log import MONITOR_SAMPLES, EpochLogger, UnsentSamples, samples_of
from tsp_mlflow.tracking.params import code_version, config_hash, log_config
from tsp_mlflow.tracking.resume import claim, clear_stop_reason
from tsp_mlflow.tracking.run_figures import log_run_figures
from tsp_mlflow.tracking.session import tracked_run
from tsp_mlflow.training.checkpoint import TrainingState, capture, restore
from tsp_mlflow.training.distributed import backend, broadcast_text, current, shard_loaders
from tsp_mlflow.training.finetune import is_learning_rate, param_groups, parameter_counts
from tsp_mlflow.training.gradients import GradientStrategy
from tsp_mlflow.training.loop import EpochMetrics, FitResult, evaluate, fit, has_missing
from tsp_mlflow.training.monitoring import MonitoringSettings, TrainingMonitor
from tsp_mlflow.training.progress import EpochProgress, progress_mode
from tsp_mlflow.training.resampling import bootstrap_test_metrics
from tsp_mlflow.training.tasks import Task

# Called after each epoch's logging as (epoch, metrics, seconds); a sweep reports to Optuna.
EpochHook = Callable[[int, EpochMetrics, float], None]


def check_trainer(cfg: DictConfig) -> None:
    """Validate trainer, optimizer and scheduler settings before any run exists."""
    epochs = cfg.trainer.epochs
    if not _is_int(epochs) or epochs <= 0:
        raise UserInputError(
            f"epochs must be a positive integer, got {epochs!r}; e.g. -P epochs=10"
        )
    for key, minimum, maximum, example in (
        ("batch_size", 1, 2**20, "trainer.batch_size=32"),
        ("num_workers", 0, 256, "trainer.num_workers=2"),
    ):
        value = cfg.trainer[key]
        if not _is_int(value) or not minimum <= value <= maximum:
            raise UserInputError(
                f"trainer.{key} must be an integer in [{minimum}, {maximum}], got {value!r}; "
                f"e.g. {example}"
            )
    seed = cfg.get("seed", 0)  # the run's seed (the pipeline's configs set their own)
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise UserInputError(f"seed must be an integer in [0, 2^32), got {seed!r}; e.g. -P seed=0")
    every = cfg.trainer.checkpoint.every_n_epochs
    if not _is_int(every) or every < 0:
        raise UserInputError(
            f"trainer.checkpoint.every_n_epochs must be an integer >= 0 (0: no checkpoints), "
            f"got {every!r}"
        )
    interval = cfg.trainer.checkpoint.min_interval_s
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval >= 0:
        raise UserInputError(
            "trainer.checkpoint.min_interval_s must be a number of seconds >= 0 (0: every "
            f"epoch), got {interval!r}"
        )
    writes_in_background(cfg.tracking.background_writes, torch.device("cpu"))  # a valid value
    for key in ("skip_train", "skip_test"):
        if not isinstance(cfg.trainer.get(key, False), bool):
            raise UserInputError(f"trainer.{key} must be true or false, got {cfg.trainer[key]!r}")
    MonitoringSettings.from_config(cfg.get("monitoring"))
    progress_mode()  # a bad TSP_PROGRESS fails here, not inside an open run
    check_optimizer(cfg)


def check_optimizer(cfg: DictConfig) -> None:
    """Build the configured optimizer and scheduler on a stand-in parameter, so that
    torch's own argument checks (and ours: a learning rate must be positive) run before
    any run exists rather than inside one."""
    lr = cfg.optim.get("lr")  # per-encoder rates (finetune.lr) are checked by finetune
    if "lr" in cfg.optim and not is_learning_rate(lr):
        raise UserInputError(
            f"optim.lr must be a positive, finite number, got {lr!r}; e.g. optim.lr=1e-3"
        )
    stand_in = [torch.nn.Parameter(torch.zeros(1))]
    with config_errors("optim"):
        optimizer = instantiate(cfg.optim)(stand_in)
    with config_errors("scheduler"):
        instantiate(cfg.scheduler)(optimizer)


@contextlib.contextmanager
def config_errors(group: str) -> Iterator[None]:
    """A constructor's own argument error, as a one-line error naming the config group."""
    try:
        yield
    except (InstantiationException, TypeError, ValueError) as err:
        cause = (err.__cause__ if isinstance(err, InstantiationException) else None) or err
        first = (str(cause).splitlines() or [type(cause).__name__])[0]
        raise UserInputError(
            f"{group}: {first}; fix the values under {group}.* (conf/{group}/)"
        ) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_data_root(cfg: DictConfig) -> None:
    """A dataset's root must exist before any run starts; its files are checked on load."""
    if "root" in cfg.data:
        expand_root(cfg.data.root, cfg.data.name)


def build_task(cfg: DictConfig) -> Task:
    """The configured task, checked against the targets the dataset provides."""
    try:
        task: Task = instantiate(cfg.task)
    except InstantiationException as err:
        cause = err.__cause__
        raise UserInputError(str(cause if isinstance(cause, UserInputError) else err)) from None
    if task.target_kind != cfg.data.target:
        raise UserInputError(
            f"task {task.name!r} reads {task.target_kind} targets but dataset "
            f"{cfg.data.name!r} provides {cfg.data.target} targets; choose a task for "
            f"{cfg.data.target} targets (conf/task/, e.g. overrides='task=...')"
        )
    return task


def build_encoder(cfg: DictConfig, modality: str) -> torch.nn.Module:
    """Instantiate a scratch encoder; its own argument errors (a hub id, a bad size) are
    the user's to fix."""
    try:
        return instantiate(cfg.model.encoders[modality])
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserInputError):
            raise UserInputError(f"model.encoders.{modality}: {cause}") from None
        raise


def check_encoder_args(cfg: DictConfig, modalities: Sequence[str]) -> None:
    """Let encoder classes vet their arguments before any run exists (``check_args``):
    a text encoder pointed at a hub id fails here, in seconds."""
    for m in modalities:
        node = cfg.model.encoders[m]
        check = getattr(get_object(node._target_), "check_args", None)
        if check is not None:
            try:
                check(**{k: v for k, v in node.items() if not str(k).startswith("_")})
            except UserInputError as err:
                raise UserInputError(f"model.encoders.{m}: {err}") from None


def task_tags(task: Task) -> dict[str, str]:
    return {schema.TASK: task.name, schema.HEADLINE_METRICS: ",".join(task.headline_metrics)}


def split_missing_rates(cfg: DictConfig, modalities: Sequence[str]) -> dict[str, dict[str, float]]:
    """split -> modality -> missing rate, from ``missing.<split>`` (absent: none missing)."""
    node = cfg.get("missing") or {}
    return {
        split: missing_rates(to_plain(node.get(split)), modalities, where=f"missing.{split}")
        for split in SPLITS
    }


def make_datasets(cfg: DictConfig, modalities: Sequence[str]) -> dict[str, Any]:
    """train/val/test splits over ``modalities``, read and validated before any run exists
    (a malformed file fails in seconds and leaves no run behind).

    Splits with missing rates are wrapped so their samples lack modalities (masks fixed by
    the run's seed); :func:`log_dataset_inputs` logs the complete data either way.
    """
    build = instantiate(cfg.data.dataset)  # partial: (split, modalities) -> Dataset
    datasets = {split: build(split=split, modalities=list(modalities)) for split in SPLITS}
    out: dict[str, Any] = dict(datasets)
    for split, rates in split_missing_rates(cfg, modalities).items():
        if any(rates.values()):
            mask = missing_mask(len(datasets[split]), rates, seed=cfg.seed, split=split)
            out[split] = WithMissingModalities(datasets[split], mask)
    return out


def log_dataset_inputs(cfg: DictConfig, datasets: dict[str, Any]) -> None:
    """The splits as the active run's MLflow dataset inputs (complete data, with digests)."""
    plain = {
        s: d.dataset if isinstance(d, WithMissingModalities) else d for s, d in datasets.items()
    }
    log_datasets(plain, cfg.data.name)


def make_loaders(
    cfg: DictConfig,
    datasets: dict[str, MultimodalDataset],
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, DataLoader]:
    """One loader per split; only train shuffles.

    Worker processes, when asked for, persist across epochs: every epoch iterates the val
    loader too, and starting workers twice an epoch measured slower than keeping them
    (bench/data.py). ``pin_memory`` speeds host-to-GPU copies and is only set on CUDA.
    """
    workers = cfg.trainer.num_workers
    return {
        split: DataLoader(
            dataset,
            batch_size=cfg.trainer.batch_size,
            shuffle=split == "train",
            generator=generator if split == "train" else None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        for split, dataset in datasets.items()
    }


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
    loaders = make_loaders(cfg, datasets, generator, device)
    ranks = current()
    if not ranks.is_main:
        received = broadcast_text(None, ranks)
        if not received:
            raise RuntimeError("rank 0 failed before its MLflow run started; see its output")
        yield received, loaders
        return
    sent = False
    try:
        with tracked_run(run_name=run_name, tags=tags, nested=nested, run_id=run_id or resume,
                         parent_run_id=parent_run_id) as run:  # fmt: skip
            if resume:
                claim(resume)
            if ranks.enabled:  # tags, not params: a resume may use another process count
                mlflow.set_tags({schema.DISTRIBUTED_WORLD_SIZE: str(ranks.world_size),
                                 schema.DISTRIBUTED_BACKEND: backend(device)})  # fmt: skip
            log_config(config, resumed=bool(resume))
            if not (resume and run.inputs.dataset_inputs):  # a resumed run may have them
                log_dataset_inputs(cfg, datasets)
            broadcast_text(run.info.run_id, ranks)
            sent = True
            yield run.info.run_id, loaders
    except BaseException:
        if ranks.enabled and not sent:  # the others wait for the run id: release them
            broadcast_text("", ranks)
        raise


def fit_tokenizers(model: LateFusionModel, train: MultimodalDataset) -> None:
    """Text encoders trained from scratch learn their vocabulary from the train split only
    (a pretrained encoder arrives with its tokenizer and keeps it)."""
    for m, encoder in model.encoders.items():
        if hasattr(encoder, "fit_tokenizer") and encoder.tokenizer is None:
            texts = train.inputs[m]
            if not isinstance(texts, list):
                raise UserInputError(
                    f"model.encoders.{m} is a text encoder but the {m} data holds features, "
                    "not text; use an MLP or sequence encoder for it"
                )
            encoder.fit_tokenizer(texts)


def make_optimizer(cfg: DictConfig, model: LateFusionModel) -> tuple[Any, Any]:
    """The optimizer over trainable parameters, with a group per ``finetune.lr`` entry."""
    lrs = to_plain(cfg.finetune.lr) if "finetune" in cfg else {}
    optimizer = instantiate(cfg.optim)(param_groups(model, lrs or {}))
    scheduler = instantiate(cfg.scheduler)(optimizer)
    return optimizer, scheduler


def train_and_test(
    cfg: DictConfig,
    model: LateFusionModel,
    loaders: dict[str, DataLoader],
    task: Task,
    device: torch.device,
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
    optimizer, scheduler = make_optimizer(cfg, model)
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
        fit, model, loaders["train"], loaders["val"], optimizer=optimizer, scheduler=scheduler,
        epochs=epochs, patterns=patterns, task=task, device=device, resume_from=state,
        monitor_pattern=full, gradient=gradient,
    )  # fmt: skip
    if skip_train:  # evaluated as built: no step, no checkpoint, nothing to resume
        train = functools.partial(_untrained, model)
    if not ranks.is_main:  # the other ranks train alongside rank 0 and log nothing
        result = train()
        model.load_state_dict(result.best_state)
        if not skip_test:
            evaluate(model, loaders["test"], patterns, device, task,
                     observed=has_missing(loaders["test"]))  # fmt: skip
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
    last: list[tuple[TrainingState | None, int, EpochMetrics, float, list[Metric]]] = []
    settings = MonitoringSettings.from_config(cfg.get("monitoring"))
    monitor = (
        TrainingMonitor(model, settings)
        if settings.enabled
        and not skip_train
        and (settings.gradient_norm or settings.weight_norm or settings.activations)
        else None
    )

    def log_epoch(epoch: int, metrics: EpochMetrics, seconds: float) -> None:
        sampled = monitor.drain() if monitor is not None else []
        unsent.add(epoch, sampled)
        snapshot = None
        if checkpointer.enabled:  # a CPU copy of the state, only when it may be saved
            snapshot = capture(epoch, model, optimizer, scheduler, generator, state, device)
            snapshot.extra["elapsed_s"] = earlier_s + time.perf_counter() - started
            # Every sample not yet known to be sent: a SIGKILL after this checkpoint's
            # upload would otherwise lose them (the epochs they belong to are not retrained).
            snapshot.extra[MONITOR_SAMPLES] = unsent.serialized()
        last[:] = [(snapshot, epoch, metrics, seconds, sampled)]
        writer.submit(lambda: write_epoch(snapshot, epoch, metrics, seconds, sampled))
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, seconds)

    def write_epoch(
        snapshot: TrainingState | None,
        epoch: int,
        metrics: EpochMetrics,
        seconds: float,
        sampled: list[Metric],
    ) -> None:  # checkpoint, then metrics (on the writer thread: while the next epoch trains)
        saved = checkpointer.offer(snapshot) if snapshot is not None else False
        sent = saved or not checkpointer.enabled
        logger.log_epoch(epoch, metrics, seconds, send=sent, extra=sampled)
        if sent:  # the flush sent every queued sample, this epoch's and earlier ones
            unsent.confirm_through(epoch)

    def write_last_epoch() -> None:
        """The newest finished epoch written whole (checkpoint, metrics, metrics.json), when
        training stops early; what was written already is not written again."""
        if last:
            snapshot, epoch, metrics, seconds, sampled = last[0]
            if snapshot is not None:
                checkpointer.offer(snapshot)
                checkpointer.flush()
            logger.log_epoch(epoch, metrics, seconds, send=True, extra=sampled)

    background = writes_in_background(cfg.tracking.background_writes, device)
    progress = EpochProgress(run.info.run_name or run_id, epochs, f"val/{full}/{task.monitor}",
                             first_epoch=state.epochs_run + 1)  # fmt: skip
    with (
        system_metrics(run_id, settings),
        BackgroundWriter(enabled=background) as writer,
        progress,
    ):
        try:
            result = train(on_epoch_end=log_epoch, monitor=monitor, progress=progress)
        except KeyboardInterrupt:  # SIGINT/SIGTERM: the last finished epoch is saved first
            with contextlib.suppress(Exception):  # a write that failed is redone just below
                writer.drain()
            write_last_epoch()
            raise
        except Exception:  # the run fails: keep what it finished, if the store still answers
            with contextlib.suppress(Exception):
                writer.drain()
            with contextlib.suppress(Exception):
                write_last_epoch()
            raise
        finally:
            if monitor is not None:
                monitor.close()
    model.load_state_dict(result.best_state)
    latency: list[float] = []
    test: dict[str, dict[str, float]] | None = None
    outputs: dict[str, torch.Tensor] = {}
    if not skip_test:
        test = evaluate(model, loaders["test"], patterns, device, task,
                        observed=has_missing(loaders["test"]), latency=latency,
                        outputs=outputs)  # fmt: skip
    # A run resumed after these were logged (killed while closing) logs none of them twice.
    done = set(mlflow.get_run(resume_run_id).data.metrics) if resume_run_id else set()
    if test is not None:
        logger.log_test(test, result.best_epoch, skip=done)
    # Fusion runs only (multimodal.yaml's test_bootstrap; pretrain configs have no such key).
    resamples = int(cfg.get("test_bootstrap", 0) or 0)
    if test is not None and resamples > 0 and outputs:
        logged = {f.path for f in MlflowClient().list_artifacts(run_id)} if resume_run_id else set()
        if schema.TEST_BOOTSTRAP_ARTIFACT not in logged:
            patterns = {k: v for k, v in outputs["patterns"].items()
                        if k != schema.OBSERVED_PATTERN}  # fmt: skip
            mlflow.log_dict(bootstrap_test_metrics(task, patterns, outputs["target"], resamples),
                            schema.TEST_BOOTSTRAP_ARTIFACT)  # fmt: skip
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
            result.history, test, (outputs["logits"], outputs["target"]) if outputs else None,
            task, full, result.best_epoch,
            # MM-IMDb's genres by name; a missing-modality wrapper holds the dataset inside
            label_names=getattr(getattr(test_data, "dataset", test_data), "target_names", ()),
        )  # fmt: skip
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


def provenance_tags(config: dict[str, Any]) -> dict[str, str]:
    return {schema.CONFIG_HASH: config_hash(config), schema.CODE_VERSION: code_version()}


def log_encoder_artifact(
    encoder: torch.nn.Module,
    config_node: dict[str, Any],
    path: str = schema.ENCODER_ARTIFACT_DIR,
) -> str:
    """Save the encoder as safetensors + JSON spec under the run's ``path`` artifact
    (``encoder/``; ``encoder/<modality>/`` for a contrastive run's encoders)."""
    kwargs = {k: v for k, v in config_node.items() if not k.startswith("_")}
    spec = encoder_spec(encoder, kwargs)
    with tempfile.TemporaryDirectory(prefix="tsp-encoder-") as tmp:
        save_encoder(encoder, spec, Path(tmp))
        mlflow.log_artifacts(tmp, path)
    return f"{mlflow.get_artifact_uri().rstrip('/')}/{path}"
