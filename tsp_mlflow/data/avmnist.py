"""AVMNIST in the MultiBench / MFAS ``.npy`` layout, and the built-in ``avdigits`` on top of it.

Layout under ``root`` (DATA.md)::

    image/train_data.npy  (N, 784) 0-255, flat 28x28   (MFAS names the folder ``images/``)
    image/test_data.npy
    audio/train_data.npy  (N, 112, 112) 0-255 spectrograms
    audio/test_data.npy
    train_labels.npy, test_labels.npy   ints 0-9

MultiBench takes validation as the last 5000 train rows; here it is the last
``val_fraction`` of them (see :func:`validation_count`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tsp_mlflow.data.avdigits import AVDigitsSpec, ensure_avdigits, validation_count
from tsp_mlflow.data.batch import Batch, Split, check_modalities, check_split

AVMNIST_MODALITIES = ("audio", "image")
IMAGE_SIDE = 28
AUDIO_SHAPE = (112, 112)


class AVMNISTDataset(Dataset[Batch]):
    """One split of AVMNIST, held in memory as float tensors in [0, 1].

    Args:
        root: folder in the MultiBench/MFAS layout.
        split: ``train``, ``val`` or ``test``.
        modalities: which of ``audio`` and ``image`` to return, in this order.
        val_fraction: trailing share of the train file used as validation.
    """

    modality_order: tuple[str, ...] = AVMNIST_MODALITIES
    num_classes = 10

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Split,
        modalities: Sequence[str] = AVMNIST_MODALITIES,
        val_fraction: float = 0.1,
    ) -> None:
        check_split(split)
        self.modalities = check_modalities(modalities, self.modality_order, dataset="avmnist")
        self.root = Path(root).expanduser()
        self.split = split
        file_split = "test" if split == "test" else "train"
        labels = _load(self.root / f"{file_split}_labels.npy")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"expected {file_split}_labels.npy to hold integer labels with shape (N,), "
                f"found {labels.dtype} {labels.shape}"
            )
        rows = _split_rows(len(labels), split, val_fraction)
        self.targets = torch.as_tensor(labels[rows], dtype=torch.long)  # (N,)
        self.inputs: dict[str, torch.Tensor] = {}
        for modality in self.modalities:
            data = self._read_modality(modality, file_split, n=len(labels))
            self.inputs[modality] = torch.as_tensor(data[rows], dtype=torch.float32).div_(255.0)

    def _read_modality(self, modality: str, file_split: str, n: int) -> np.ndarray:
        if modality == "image":
            folder = next(
                (self.root / d for d in ("image", "images") if (self.root / d).is_dir()),
                self.root / "image",
            )
            path = folder / f"{file_split}_data.npy"
            data = _load(path)
            if data.shape[1:] in ((IMAGE_SIDE * IMAGE_SIDE,), (IMAGE_SIDE, IMAGE_SIDE)):
                data = data.reshape(len(data), 1, IMAGE_SIDE, IMAGE_SIDE)  # (N, 1, 28, 28)
            else:
                raise ValueError(
                    f"expected {path} with shape (N,784) or (N,28,28), found {data.shape}"
                )
        else:
            path = self.root / "audio" / f"{file_split}_data.npy"
            data = _load(path)
            if data.shape[1:] != AUDIO_SHAPE:
                raise ValueError(f"expected {path} with shape (N,112,112), found {data.shape}")
            data = data[:, None]  # (N, 1, 112, 112)
        if len(data) != n:
            raise ValueError(
                f"{path} has {len(data)} rows but {file_split}_labels.npy has {n}: "
                "the files come from different releases"
            )
        return data

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Batch:
        return {
            "inputs": {m: x[index] for m, x in self.inputs.items()},
            "present": torch.ones(len(self.modalities), dtype=torch.bool),
            "target": self.targets[index],
        }


class AVDigitsDataset(AVMNISTDataset):
    """The built-in offline benchmark: generated once into ``cache_dir``, read as AVMNIST.

    Args:
        cache_dir: where generated datasets are cached (created if missing).
        split: ``train``, ``val`` or ``test``.
        modalities: which of ``audio`` and ``image`` to return.
        seed: generator seed; each seed is its own cached dataset.
        val_fraction: share of the non-test rows used for validation.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        split: Split,
        modalities: Sequence[str] = AVMNIST_MODALITIES,
        seed: int = 0,
        val_fraction: float = 0.2,
    ) -> None:
        root = ensure_avdigits(cache_dir, AVDigitsSpec(seed=seed, val_fraction=val_fraction))
        super().__init__(root, split, modalities, val_fraction=val_fraction)


def _split_rows(n_train_file: int, split: Split, val_fraction: float) -> slice:
    if split == "test":
        return slice(None)
    n_val = validation_count(n_train_file, val_fraction)
    return slice(n_train_file - n_val, None) if split == "val" else slice(0, n_train_file - n_val)


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"missing {path}: expected the MultiBench AVMNIST layout "
            "(image/ or images/, audio/, train_labels.npy, test_labels.npy) under the data root"
        )
    return np.load(path, allow_pickle=False)
