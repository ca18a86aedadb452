"""The missing-modality protocol: which modalities each sample lacks, per split.

Rates are per modality and per split. Masks are drawn once per (seed, split) from their
own generator, so they are identical across runs with the same seed whatever else
consumed randomness, and every sample keeps at least one modality: a sample that drew
"all missing" gets one modality back, chosen uniformly from the same generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tsp_mlflow.data.batch import SPLITS, Batch
from tsp_mlflow.errors import UserInputError


def missing_rates(
    value: float | Mapping[str, float] | None, modalities: Sequence[str], where: str
) -> dict[str, float]:
    """A split's setting (one rate for every modality, or modality -> rate) as a dict."""
    if value is None:
        return dict.fromkeys(modalities, 0.0)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(modalities))
        if unknown:
            raise UserInputError(
                f"{where} names unknown modalities {unknown}; this dataset has "
                f"{', '.join(modalities)}"
            )
        rates = {m: _rate(value.get(m, 0.0), where) for m in modalities}
    else:
        rates = dict.fromkeys(modalities, _rate(value, where))
    bad = {m: r for m, r in rates.items() if not 0.0 <= r < 1.0}
    if bad:
        raise UserInputError(
            f"{where}: missing rates must lie in [0, 1), got {bad}; e.g. {where}=0.5 "
            f"(every modality) or {where}={{{modalities[0]}:0.5}}"
        )
    return rates


def _rate(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserInputError(
            f"{where}: a missing rate must be a number in [0, 1), got {value!r}; e.g. {where}=0.2"
        ) from None


def describe_rates(rates: Mapping[str, float]) -> str:
    """``0.2`` when every modality shares the rate, else ``audio=0.9,image=0``."""
    values = set(rates.values())
    if len(values) == 1:
        return f"{values.pop():g}"
    return ",".join(f"{m}={r:g}" for m, r in rates.items())


def missing_mask(n: int, rates: Mapping[str, float], seed: int, split: str) -> torch.Tensor:
    """(n, M) bool: True where the modality is present, columns in ``rates`` order."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 0x6D697373])  # "miss"
    p = np.array(list(rates.values()))
    present = rng.random((n, len(p))) >= p  # (n, M)
    empty = np.flatnonzero(~present.any(axis=1))
    if len(empty):
        keep = rng.integers(0, len(p), len(empty))  # give each one modality back
        present[empty, keep] = True
    return torch.from_numpy(present)


class WithMissingModalities(Dataset[Batch]):
    """A dataset whose samples lack modalities according to a fixed mask.

    The inputs stay (encoders see real data and their outputs are masked), so evaluating
    the same samples on complete data remains possible.
    """

    def __init__(self, dataset: Any, present: torch.Tensor) -> None:
        if present.shape != (len(dataset), len(dataset.modalities)):
            raise ValueError(
                f"mask shape {tuple(present.shape)} does not fit {len(dataset)} samples x "
                f"{len(dataset.modalities)} modalities"
            )
        self.dataset = dataset
        self.present = present
        self.modalities = dataset.modalities

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Batch:
        item = self.dataset[index]
        return {**item, "present": self.present[index]}

    def __getattr__(self, name: str) -> Any:  # inputs, targets, layout, ... of the dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
