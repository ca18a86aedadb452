"""The dataset contract every loader shares, and content digests for ``mlflow.log_input``.

A dataset holds one split: ``inputs`` maps each requested modality to a column (a Tensor
with one row per sample, a list of strings, a :class:`Sequences`, or a lazily read
:class:`LazyColumn`) and ``targets`` holds the dataset's natural labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from tsp_mlflow.data.batch import Batch, ModalityInput, Split, check_modalities, check_split


@dataclass
class Sequences:
    """Padded sequences: ``values`` (N, T, D) padded at the end, ``lengths`` (N,)."""

    values: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return len(self.values)


class LazyColumn(Protocol):
    """A column too large for memory (posters): rows are read in ``__getitem__``."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> torch.Tensor: ...
    def digest_into(self, hasher: Any) -> None: ...
    def sample_shape(self) -> tuple[int, ...]: ...


Column = torch.Tensor | list[str] | Sequences | LazyColumn


class MultimodalDataset(Dataset[Batch]):
    """Base class: subclasses fill ``inputs``, ``targets``, ``layout`` and ``source``.

    Attributes:
        modality_order: every modality of the dataset, in canonical order.
        modalities: the requested ones, in canonical order.
        layout: the on-disk layout that was read (``tsp data check`` prints it).
        source: the file or folder read, logged as the MLflow dataset source.
    """

    modality_order: ClassVar[tuple[str, ...]]
    name: ClassVar[str]

    def __init__(self, split: Split, modalities: Sequence[str]) -> None:
        check_split(split)
        self.split = split
        self.modalities = check_modalities(modalities, self.modality_order, dataset=self.name)
        self.inputs: dict[str, Column] = {}
        self.targets = torch.empty(0)
        self.layout = ""
        self.source = ""

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Batch:
        return {
            "inputs": {m: _row(self.inputs[m], index) for m in self.modalities},
            "present": torch.ones(len(self.modalities), dtype=torch.bool),
            "target": self.targets[index],
        }

    def content_digest(self) -> str:
        """SHA-256 over every sample of this split (inputs and targets), not a prefix.

        MLflow's own dataset digests look at the first 10,000 elements only, so two
        releases that differ further down would look identical.
        """
        hasher = hashlib.sha256()
        hasher.update(f"{self.name}/{self.split}/{','.join(self.modalities)}".encode())
        for m in self.modalities:
            hasher.update(m.encode())
            _digest_column(self.inputs[m], hasher)
        _digest_tensor(self.targets, hasher)
        return hasher.hexdigest()

    def sample_shapes(self) -> dict[str, str]:
        """Modality -> the shape of one sample, as text (``tsp data check``, MLflow schema)."""
        return {m: _describe(self.inputs[m]) for m in self.modalities}


def _row(column: Column, index: int) -> ModalityInput:
    if isinstance(column, Sequences):
        return {"values": column.values[index], "lengths": column.lengths[index]}
    return column[index]


def _digest_tensor(t: torch.Tensor, hasher: Any) -> None:
    array = np.ascontiguousarray(t.detach().cpu().numpy())
    hasher.update(f"{array.dtype}{array.shape}".encode())
    hasher.update(memoryview(array).cast("B"))


def _digest_column(column: Column, hasher: Any) -> None:
    if isinstance(column, torch.Tensor):
        _digest_tensor(column, hasher)
    elif isinstance(column, Sequences):
        _digest_tensor(column.values, hasher)
        _digest_tensor(column.lengths, hasher)
    elif isinstance(column, list):
        for text in column:
            encoded = text.encode()
            hasher.update(len(encoded).to_bytes(8, "little") + encoded)
    else:
        column.digest_into(hasher)


def _describe(column: Column) -> str:
    if isinstance(column, torch.Tensor):
        return f"{tuple(column.shape[1:])} {str(column.dtype).removeprefix('torch.')}"
    if isinstance(column, Sequences):
        lengths = column.lengths
        return (
            f"sequence (T<={column.values.shape[1]}, D={column.values.shape[2]}), "
            f"lengths {int(lengths.min())}-{int(lengths.max())}"
        )
    if isinstance(column, list):
        words = [len(t.split()) for t in column] or [0]
        return f"text, {min(words)}-{max(words)} words"
    return f"{column.sample_shape()} float32 (read lazily)"


def cached_file_digest(path: Path, parts: Sequence[object], compute: Callable[[Any], None]) -> str:
    """A digest of (part of) a large file, cached by path, size and modification time.

    Hashing 13 GB of MM-IMDb posters takes a minute; doing it once per file version is
    enough. The cache lives in ``$TSP_DATA_DIR/digests.json``; a changed file (size or
    mtime) is hashed again.
    """
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, *map(str, parts)])
    cache = Path(os.environ.get("TSP_DATA_DIR", "~/.cache/tsp-mlflow")).expanduser()
    cache_file = cache / "digests.json"
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    hasher = hashlib.sha256()
    compute(hasher)
    digest = hasher.hexdigest()
    known[key] = digest
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(cache_file)  # atomic: concurrent runs never read half a file
    except OSError:
        pass  # a read-only cache only costs the next run a re-hash
    return digest
