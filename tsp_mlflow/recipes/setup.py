"""The setup steps every training recipe performs identically: the task, the encoders, the
datasets and loaders, the optimizer, the tags. Each step takes the config slice it reads,
already checked (:mod:`tsp_mlflow.recipes.config_checks`)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from tsp_mlflow.config import to_plain
from tsp_mlflow.data.base import MultimodalDataset
from tsp_mlflow.data.batch import SPLITS
from tsp_mlflow.data.missing import WithMissingModalities, missing_mask, missing_rates
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.models.serialization import encoder_spec, save_encoder
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.datasets import log_datasets
from tsp_mlflow.tracking.params import code_version, config_hash
from tsp_mlflow.training.finetune import param_groups
from tsp_mlflow.training.tasks import Task


def build_task(task: DictConfig, data: DictConfig) -> Task:
    """The configured task, checked against the targets the dataset provides."""
    try:
        built: Task = instantiate(task)
    except InstantiationException as err:
        cause = err.__cause__
        raise UserInputError(str(cause if isinstance(cause, UserInputError) else err)) from None
    if built.target_kind != data.target:
        raise UserInputError(
            f"task {built.name!r} reads {built.target_kind} targets but dataset "
            f"{data.name!r} provides {data.target} targets; choose a task for "
            f"{data.target} targets (conf/task/, e.g. overrides='task=...')"
        )
    return built


def build_encoder(encoders: DictConfig, modality: str) -> torch.nn.Module:
    """Instantiate a scratch encoder from ``model.encoders``; its own argument errors (a hub
    id, a bad size) are the user's to fix."""
    try:
        return instantiate(encoders[modality])
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserInputError):
            raise UserInputError(f"model.encoders.{modality}: {cause}") from None
        raise


def task_tags(task: Task) -> dict[str, str]:
    return {schema.TASK: task.name, schema.HEADLINE_METRICS: ",".join(task.headline_metrics)}


def provenance_tags(config: dict[str, Any]) -> dict[str, str]:
    return {schema.CONFIG_HASH: config_hash(config), schema.CODE_VERSION: code_version()}


def split_missing_rates(
    missing: DictConfig | None, modalities: Sequence[str]
) -> dict[str, dict[str, float]]:
    """split -> modality -> missing rate, from ``missing.<split>`` (absent: none missing)."""
    node = missing or {}
    return {
        split: missing_rates(to_plain(node.get(split)), modalities, where=f"missing.{split}")
        for split in SPLITS
    }


def make_datasets(
    data: DictConfig, modalities: Sequence[str], *, missing: DictConfig | None, seed: int
) -> dict[str, Any]:
    """train/val/test splits over ``modalities``, read and validated before any run exists
    (a malformed file fails in seconds and leaves no run behind).

    Splits with ``missing`` rates are wrapped so their samples lack modalities (masks fixed
    by the run's ``seed``); :func:`log_dataset_inputs` logs the complete data either way.
    """
    build = instantiate(data.dataset)  # partial: (split, modalities) -> Dataset
    datasets = {split: build(split=split, modalities=list(modalities)) for split in SPLITS}
    out: dict[str, Any] = dict(datasets)
    for split, rates in split_missing_rates(missing, modalities).items():
        if any(rates.values()):
            mask = missing_mask(len(datasets[split]), rates, seed=seed, split=split)
            out[split] = WithMissingModalities(datasets[split], mask)
    return out


def log_dataset_inputs(datasets: dict[str, Any], name: str) -> None:
    """The splits as the active run's MLflow dataset inputs (complete data, with digests)."""
    plain = {
        s: d.dataset if isinstance(d, WithMissingModalities) else d for s, d in datasets.items()
    }
    log_datasets(plain, name)


def make_loaders(
    trainer: DictConfig,
    datasets: dict[str, MultimodalDataset],
    generator: torch.Generator,
    device: torch.device,
) -> dict[str, DataLoader]:
    """One loader per split; only train shuffles.

    Worker processes, when asked for, persist across epochs: every epoch iterates the val
    loader too, and starting workers twice an epoch measured slower than keeping them
    (bench/data.py). ``pin_memory`` speeds host-to-GPU copies and is only set on CUDA.
    """
    workers = trainer.num_workers
    return {
        split: DataLoader(
            dataset,
            batch_size=trainer.batch_size,
            shuffle=split == "train",
            generator=generator if split == "train" else None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        for split, dataset in datasets.items()
    }


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


def make_optimizer(
    optim: DictConfig,
    scheduler: DictConfig,
    model: LateFusionModel,
    encoder_lrs: dict[str, float] | None = None,
) -> tuple[Any, Any]:
    """The optimizer over trainable parameters, with a group per ``finetune.lr`` entry."""
    optimizer = instantiate(optim)(param_groups(model, encoder_lrs or {}))
    return optimizer, instantiate(scheduler)(optimizer)


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
