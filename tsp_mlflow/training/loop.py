"""One explicit training loop and the per-pattern evaluator, shared by every recipe."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.profiler import record_function
from torch.utils.data import DataLoader, Subset

from tsp_mlflow.data.batch import Batch, ModalityInput, pattern_mask, pattern_name
from tsp_mlflow.data.missing import WithMissingModalities
from tsp_mlflow.errors import TrainingDiverged
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.tracking.schema import OBSERVED_PATTERN
from tsp_mlflow.training.distributed import all_rows, all_sum, shard_weight, sync_buffers, wrap
from tsp_mlflow.training.gradients import GradientStrategy, Joint
from tsp_mlflow.training.monitoring import TrainingMonitor
from tsp_mlflow.training.progress import EpochProgress
from tsp_mlflow.training.tasks import Task

# split -> pattern -> metric -> value ("train" holds one pseudo-pattern, "all").
EpochMetrics = dict[str, dict[str, dict[str, float]]]


@dataclass
class FitResult:
    """The early-stopping state and history; a checkpoint saves it, a resume continues it."""

    best_epoch: int = 0
    best_value: float = float("nan")
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    epochs_run: int = 0
    train_seconds: float = 0.0
    history: list[EpochMetrics] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {
        "inputs": {m: _move(x, device) for m, x in batch["inputs"].items()},
        "present": batch["present"].to(device, non_blocking=True),
        "target": batch["target"].to(device, non_blocking=True),
    }


def _move(x: ModalityInput, device: torch.device) -> ModalityInput:
    """Tensors move; a sequence's ``{"values", "lengths"}`` moves per key; raw text stays
    a list of strings (text encoders tokenize on their own device)."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x


@torch.no_grad()
def evaluate(
    model: LateFusionModel,
    loader: DataLoader,
    patterns: Sequence[Sequence[str]],
    device: torch.device,
    task: Task,
    observed: bool = False,
    latency: list[float] | None = None,
    outputs: dict[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics for every modality pattern on complete data, from one pass over ``loader``.

    Encoders run once per batch; each pattern then re-masks the same embeddings. This is
    exact for late fusion and avoids copying the data once per pattern. With ``observed``,
    the split's own missing-modality masks are evaluated too, as pattern ``observed``.
    With ``latency``, the seconds of each batch's full-pattern forward pass (encoders,
    fusion, head; data loading and transfer excluded) are appended to it: what a fusion
    method costs at test time, measured in the same pass. With ``outputs``, it receives the
    full pattern's ``logits`` and ``target`` (for the run's figures), and ``patterns``:
    every pattern's logits (for the test-set bootstrap).
    """
    model.eval()
    names = [pattern_name(p, model.modalities) for p in patterns]
    logits: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    if observed:
        logits[OBSERVED_PATTERN] = []
    targets: list[torch.Tensor] = []
    for batch in loader:
        batch = to_device(batch, device)
        start = _clock(device) if latency is not None else 0.0
        feats = model.encode(batch["inputs"])
        rows = len(batch["present"])
        for name, pattern in zip(names, patterns, strict=True):
            mask = pattern_mask(pattern, model.modalities, rows).to(device)  # complete data
            out = model.classify(feats, mask)  # (B, C)
            if latency is not None and len(pattern) == len(model.modalities):
                latency.append(_clock(device) - start)
            logits[name].append(out.float().cpu())
        if observed:  # what the data itself has
            logits[OBSERVED_PATTERN].append(model.classify(feats, batch["present"]).float().cpu())
        targets.append(task.target(batch["target"]).cpu())
    # Under torchrun each rank evaluated its shard: every rank gets all rows back, in order.
    target = all_rows(_cat(targets))
    gathered = {name: all_rows(_cat(chunks)) for name, chunks in logits.items()}
    if outputs is not None:
        full = pattern_name(model.modalities, model.modalities)
        outputs.update(logits=gathered[full], target=target, patterns=gathered)
    return {name: task.metrics(values, target) for name, values in gathered.items()}


def _cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    """The batches' rows; a rank whose shard of a split is empty has none (shape (0,))."""
    return torch.cat(chunks) if chunks else torch.empty(0)


def _clock(device: torch.device) -> float:
    """Wall time after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def has_missing(loader: DataLoader) -> bool:
    """Whether the loader's samples lack modalities (then ``observed`` is evaluated too)."""
    dataset = loader.dataset
    if isinstance(dataset, Subset):  # a rank's shard under torchrun
        dataset = dataset.dataset
    return isinstance(dataset, WithMissingModalities)


def fit(
    model: LateFusionModel,
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler
    | torch.optim.lr_scheduler.ReduceLROnPlateau
    | None,
    epochs: int,
    patterns: Sequence[Sequence[str]],
    task: Task,
    monitor_pattern: str,
    device: torch.device,
    on_epoch_end: Callable[[int, EpochMetrics, float], None] | None = None,
    resume_from: FitResult | None = None,
    gradient: GradientStrategy | None = None,
    monitor: TrainingMonitor | None = None,
    progress: EpochProgress | None = None,
) -> FitResult:
    """Train for ``epochs``, evaluating every pattern on val after each epoch.

    Args:
        task: loss and metrics; ``task.monitor`` on val, for ``monitor_pattern``, picks the
            best epoch (maximum, or minimum for lower-is-better metrics such as MAE).
        on_epoch_end: called as ``(epoch, metrics, epoch_seconds)``; epochs count from 1.
            The returned :class:`FitResult` is already updated for that epoch (a
            checkpoint taken there holds it).
        resume_from: the early-stopping state of a checkpoint; training goes on after its
            ``epochs_run`` (model, optimizer and RNG states are restored by the caller).
        gradient: how the multimodal loss, the unimodal heads' losses and the predictor's
            loss become one update (:mod:`~tsp_mlflow.training.gradients`; default
            :class:`~tsp_mlflow.training.gradients.Joint`). Train metrics then also hold
            ``loss_<m>`` per unimodal head and the predictor's VICReg terms, and
            ``metrics["gradient"][m]`` MMPareto's per-encoder statistics (epoch means).
        monitor: samples gradient/weight norms and activations every N steps.
        progress: bars or one line per epoch.

    Raises:
        TrainingDiverged: the loss is NaN or infinite; the message names epoch and step.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    model.to(device)
    net = wrap(model, device)  # under torchrun: DDP, whose forward syncs the gradients
    sign = 1.0 if task.higher_is_better(task.monitor) else -1.0
    best = resume_from or FitResult()
    strategy = gradient or Joint()
    for epoch in range(best.epochs_run + 1, epochs + 1):
        start = time.perf_counter()
        model.train()
        outputs: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        extra = _EpochMeans()
        if progress is not None:
            progress.start_epoch(epoch, len(train_loader))
        for step, batch in enumerate(train_loader, start=1):
            global_step = (epoch - 1) * len(train_loader) + step
            batch = to_device(batch, device)
            target = task.target(batch["target"])
            present = batch["present"]
            with monitor.watching(global_step) if monitor else contextlib.nullcontext():
                feats, logits = net(batch["inputs"], present, features=True)  # logits: (B, C)
            loss = task.loss(logits, target)
            unimodal = unimodal_losses(model, feats, present, target, task)
            auxiliary, predictor_stats = (
                model.predictor.loss(feats, present) if model.predictor is not None else (None, {})
            )
            watched = sum((x.detach() for x in unimodal.values()), loss.detach())
            if auxiliary is not None:
                watched = watched + auxiliary.detach()
            if not torch.isfinite(
                all_sum(watched)
            ):  # every rank stops together  # syncs, as the .cpu() below does anyway
                raise TrainingDiverged(
                    f"the training loss is {loss.item()} at epoch {epoch}, step {step} "
                    f"(global step {global_step}); lower optim.lr, "
                    "or check the inputs for NaN/inf values (tsp data check)"
                )
            optimizer.zero_grad(set_to_none=True)
            # Under torchrun a rank's share of the step's rows weighs its loss, so that
            # DDP's average over ranks is the mean over the whole global batch.
            weighted = loss * shard_weight(len(present), device)
            step_stats = strategy.backward(model, weighted, unimodal, auxiliary)
            if monitor is not None:  # this step's gradients, before the update
                monitor.step(global_step, feats)
            optimizer.step()
            if progress is not None:
                progress.advance()
            outputs.append(logits.detach().float().cpu())
            targets.append(target.cpu())
            rows = len(present)
            for i, m in enumerate(model.modalities):
                if m in unimodal:  # a mean over the rows where the modality was present
                    extra.add(("train", "all", f"loss_{m}"), unimodal[m], present[:, i].sum())
            for name, value in predictor_stats.items():
                extra.add(("train", "all", f"predictor_{name}"), value, rows)
            for m, values in step_stats.items():
                for name, value in values.items():
                    extra.add(("gradient", m, name), value, 1)
        # Metrics of the weights as they moved through the epoch; the loss over all
        # outputs equals the batch losses averaged with batch-size weights.
        # Under torchrun: over every rank's rows of the epoch.
        train = task.metrics(all_rows(torch.cat(outputs)), all_rows(torch.cat(targets)))
        sync_buffers(model)  # under torchrun: every rank evaluates rank 0's model
        with record_function("validate"):  # a named range in profiles (bench/profile_epoch.py)
            val = evaluate(
                model, val_loader, patterns, device, task, observed=has_missing(val_loader)
            )
        value = val[monitor_pattern][task.monitor]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(sign * value)  # configs say mode=max: flip lower-is-better metrics
        elif scheduler is not None:
            scheduler.step()
        seconds = time.perf_counter() - start
        metrics: EpochMetrics = {"train": {"all": train}, "val": val}
        extra.merge_into(metrics)
        best.history.append(metrics)
        best.epochs_run, best.train_seconds = epoch, best.train_seconds + seconds
        best.epoch_seconds.append(seconds)
        # Strict: ties keep the earlier, cheaper epoch. A NaN (e.g. Pearson r of constant
        # predictions) only stands while no epoch has a real value.
        if best.best_epoch == 0 or (
            not math.isnan(value)
            and (math.isnan(best.best_value) or sign * value > sign * best.best_value)
        ):
            best.best_epoch, best.best_value = epoch, value
            best.best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            progress.end_epoch(
                epoch, train.get("loss", math.nan), value, best.best_value, best.best_epoch, seconds
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, seconds)
    return best


def unimodal_losses(
    model: LateFusionModel,
    feats: dict[str, torch.Tensor],
    present: torch.Tensor,
    target: torch.Tensor,
    task: Task,
) -> dict[str, torch.Tensor]:
    """modality -> its unimodal head's loss over the rows where it is present (a modality
    missing from every row of the batch has no loss this step)."""
    losses = {}
    for m, (logits, rows) in model.unimodal_logits(feats, present).items():
        if bool(rows.all()):
            losses[m] = task.loss(logits, target)
        elif bool(rows.any()):
            losses[m] = task.loss(logits[rows], target[rows])
    return losses


class _EpochMeans:
    """Weighted means over an epoch's steps of scalar tensors or floats, per metric path."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str, str], torch.Tensor | float] = {}
        self.weights: dict[tuple[str, str, str], torch.Tensor | float] = {}

    def add(
        self,
        key: tuple[str, str, str],
        value: torch.Tensor | float,
        weight: torch.Tensor | float,
    ) -> None:
        value = value.detach() if isinstance(value, torch.Tensor) else value  # no sync here
        self.sums[key] = self.sums.get(key, 0.0) + value * weight
        self.weights[key] = self.weights.get(key, 0.0) + weight

    def merge_into(self, metrics: EpochMetrics) -> None:
        for (split, pattern, name), total in self.sums.items():
            mean = float(total) / float(self.weights[(split, pattern, name)])
            metrics.setdefault(split, {}).setdefault(pattern, {})[name] = mean
