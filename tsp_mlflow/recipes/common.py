"""Small setup steps that every training recipe performs identically."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from tsp_mlflow.data.batch import all_patterns, pattern_name
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.models.serialization import encoder_spec, save_encoder
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.epoch_log import EpochLogger
from tsp_mlflow.tracking.params import code_version, config_hash
from tsp_mlflow.training.loop import FitResult, evaluate, fit

# Validation metrics that can pick the best epoch and the champion: higher must be better.
MONITORS = ("accuracy", "f1_macro")


def check_trainer(cfg: DictConfig) -> None:
    """Validate trainer settings before any run exists."""
    if cfg.trainer.monitor not in MONITORS:
        raise UserInputError(
            f"trainer.monitor={cfg.trainer.monitor!r} cannot rank epochs; choose one of "
            f"{', '.join(MONITORS)} (higher is better)"
        )
    epochs = cfg.trainer.epochs
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise UserInputError(
            f"epochs must be a positive integer, got {epochs!r}; e.g. -P epochs=10"
        )


def make_loaders(
    cfg: DictConfig, modalities: Sequence[str], generator: torch.Generator, device: torch.device
) -> dict[str, DataLoader]:
    """train/val/test loaders over ``modalities``; only train shuffles."""
    build = instantiate(cfg.data.dataset)  # partial: (split, modalities) -> Dataset
    pin = device.type == "cuda"
    return {
        split: DataLoader(
            build(split=split, modalities=list(modalities)),
            batch_size=cfg.trainer.batch_size,
            shuffle=split == "train",
            generator=generator if split == "train" else None,
            num_workers=cfg.trainer.num_workers,
            pin_memory=pin,
        )
        for split in ("train", "val", "test")
    }


def make_optimizer(cfg: DictConfig, model: torch.nn.Module) -> tuple[Any, Any]:
    optimizer = instantiate(cfg.optim)(model.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer)
    return optimizer, scheduler


def train_and_test(
    cfg: DictConfig,
    model: LateFusionModel,
    loaders: dict[str, DataLoader],
    device: torch.device,
    started: float,
) -> FitResult:
    """Fit with per-epoch logging, restore the best-by-validation weights, log test metrics.

    Every modality pattern is evaluated; the full pattern's ``trainer.monitor`` metric on
    val picks the best epoch.
    """
    patterns = all_patterns(model.modalities)
    optimizer, scheduler = make_optimizer(cfg, model)
    logger = EpochLogger()
    result = fit(
        model,
        loaders["train"],
        loaders["val"],
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=cfg.trainer.epochs,
        patterns=patterns,
        monitor=(pattern_name(model.modalities, model.modalities), cfg.trainer.monitor),
        device=device,
        on_epoch_end=logger.log_epoch,
    )
    model.load_state_dict(result.best_state)
    logger.log_test(evaluate(model, loaders["test"], patterns, device), result.best_epoch)
    mlflow.log_metrics(
        {
            schema.BEST_EPOCH: result.best_epoch,
            schema.BEST_VALUE: result.best_value,
            schema.TIME_TRAIN_TOTAL: result.train_seconds,
            schema.TIME_TOTAL: time.perf_counter() - started,
        }
    )
    return result


def provenance_tags(config: dict[str, Any]) -> dict[str, str]:
    return {schema.CONFIG_HASH: config_hash(config), schema.CODE_VERSION: code_version()}


def log_encoder_artifact(encoder: torch.nn.Module, config_node: dict[str, Any]) -> str:
    """Save the encoder as safetensors + JSON spec under the run's ``encoder/`` artifact."""
    kwargs = {k: v for k, v in config_node.items() if not k.startswith("_")}
    spec = encoder_spec(encoder, kwargs)
    with tempfile.TemporaryDirectory(prefix="tsp-encoder-") as tmp:
        save_encoder(encoder, spec, Path(tmp))
        mlflow.log_artifacts(tmp, schema.ENCODER_ARTIFACT_DIR)
    return f"{mlflow.get_artifact_uri().rstrip('/')}/{schema.ENCODER_ARTIFACT_DIR}"
