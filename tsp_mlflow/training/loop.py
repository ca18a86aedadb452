"""One explicit training loop and the per-pattern evaluator, shared by every recipe."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tsp_mlflow.data.batch import Batch, pattern_mask, pattern_name
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.training.metrics import classification_metrics, label_metrics

# split -> pattern -> metric -> value ("train" holds one pseudo-pattern, "all").
EpochMetrics = dict[str, dict[str, dict[str, float]]]


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    best_state: dict[str, torch.Tensor]
    epochs_run: int
    train_seconds: float
    history: list[EpochMetrics] = field(default_factory=list)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {
        "inputs": {m: x.to(device, non_blocking=True) for m, x in batch["inputs"].items()},
        "present": batch["present"].to(device, non_blocking=True),
        "target": batch["target"].to(device, non_blocking=True),
    }


@torch.no_grad()
def evaluate(
    model: LateFusionModel,
    loader: DataLoader,
    patterns: Sequence[Sequence[str]],
    device: torch.device,
) -> dict[str, dict[str, float]]:
    """Metrics for every modality pattern, from one pass over ``loader``.

    Encoders run once per batch; each pattern then re-masks the same embeddings. This is
    exact for late fusion and avoids copying the data once per pattern.
    """
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {
        pattern_name(p, model.modalities): [] for p in patterns
    }
    targets: list[torch.Tensor] = []
    for batch in loader:
        batch = to_device(batch, device)
        feats = model.encode(batch["inputs"])
        available = batch["present"]  # (B, M): what the data itself has
        for pattern in patterns:
            mask = pattern_mask(pattern, model.modalities, len(available)).to(device)
            out = model.classify(feats, available & mask)  # (B, C)
            logits[pattern_name(pattern, model.modalities)].append(out.float().cpu())
        targets.append(batch["target"].cpu())
    target = torch.cat(targets)
    return {
        name: classification_metrics(torch.cat(chunks), target) for name, chunks in logits.items()
    }


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
    monitor: tuple[str, str],
    device: torch.device,
    on_epoch_end: Callable[[int, EpochMetrics, float], None] | None = None,
) -> FitResult:
    """Train for ``epochs``, evaluating every pattern on val after each epoch.

    Args:
        monitor: (pattern, metric) on val whose maximum picks the best epoch.
        on_epoch_end: called as ``(epoch, metrics, epoch_seconds)``; epochs count from 1.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    model.to(device)
    best = FitResult(
        best_epoch=0, best_value=float("-inf"), best_state={}, epochs_run=0, train_seconds=0.0
    )
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum, seen = 0.0, 0
        preds: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        for batch in train_loader:
            batch = to_device(batch, device)
            logits = model(batch["inputs"], batch["present"])  # (B, C)
            loss = F.cross_entropy(logits, batch["target"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(batch["target"])
            loss_sum += loss.item() * n
            seen += n
            preds.append(logits.detach().argmax(dim=1).cpu())
            targets.append(batch["target"].cpu())
        train = {"loss": loss_sum / seen, **label_metrics(torch.cat(preds), torch.cat(targets))}
        val = evaluate(model, val_loader, patterns, device)
        value = val[monitor[0]][monitor[1]]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(value)
        elif scheduler is not None:
            scheduler.step()
        seconds = time.perf_counter() - start
        metrics: EpochMetrics = {"train": {"all": train}, "val": val}
        best.history.append(metrics)
        best.epochs_run, best.train_seconds = epoch, best.train_seconds + seconds
        if value > best.best_value:  # strict: ties keep the earlier, cheaper epoch
            best.best_epoch, best.best_value = epoch, value
            best.best_state = copy.deepcopy(model.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, seconds)
    return best
