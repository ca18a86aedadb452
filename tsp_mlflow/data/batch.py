"""The batch contract shared by every dataset, model and metric.

A batch is ``{"inputs": {modality: input}, "present": BoolTensor[B, M], "target": Tensor}``.
Columns of ``present`` follow the dataset's modality order; modalities are always named.

A modality's input is one of:

* a Tensor (B, ...): images, spectrograms, feature vectors;
* a sequence ``{"values": (B, T, D), "lengths": (B,)}``, padded at the end, so
  sequence encoders can pack or mask by length;
* raw text, a list of B strings: text encoders own their tokenizer and tokenize.

The target is the dataset's natural label (class index, multi-hot row, sentiment score);
the task (:mod:`tsp_mlflow.training.tasks`) derives what the loss sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Literal, TypedDict

import torch

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# MLflow metric keys reject "+", so patterns join modality names with "-".
PATTERN_SEPARATOR = "-"


ModalityInput = torch.Tensor | dict[str, torch.Tensor] | list[str]


class Batch(TypedDict):
    inputs: dict[str, ModalityInput]
    present: torch.Tensor
    target: torch.Tensor


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def check_modalities(
    modalities: Sequence[str], available: Sequence[str], dataset: str
) -> tuple[str, ...]:
    """Validate requested modalities and return them in the dataset's canonical order."""
    if isinstance(modalities, str):
        modalities = [modalities]
    unknown = [m for m in modalities if m not in available]
    if unknown or not modalities:
        raise ValueError(
            f"unknown modality {', '.join(map(repr, unknown)) or '(none given)'} for dataset "
            f"{dataset!r}; choose from {', '.join(available)}"
        )
    return tuple(m for m in available if m in modalities)


def pattern_name(present: Sequence[str], order: Sequence[str]) -> str:
    """Name a modality pattern: the present modalities in dataset order, joined by ``-``."""
    return PATTERN_SEPARATOR.join(m for m in order if m in present)


def all_patterns(order: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of modalities (2^M - 1), the full pattern first."""
    return [
        combo for size in range(len(order), 0, -1) for combo in combinations(tuple(order), size)
    ]


def pattern_mask(pattern: Sequence[str], order: Sequence[str], batch_size: int) -> torch.Tensor:
    """BoolTensor[B, M] marking the modalities of ``pattern`` present in every row."""
    row = torch.tensor([m in pattern for m in order], dtype=torch.bool)
    return row.expand(batch_size, -1)
