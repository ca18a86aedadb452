"""AVMNIST in the MultiBench / MFAS ``.npy`` layout and in the thesis's CSV-of-``.pt``
layout, and the built-in ``avdigits`` on top of the first.

MultiBench / MFAS layout under ``root`` (DATA.md)::

    image/train_data.npy  (N, 784) 0-255, flat 28x28   (MFAS names the folder ``images/``)
    image/test_data.npy
    audio/train_data.npy  (N, 112, 112) 0-255 spectrograms
    audio/test_data.npy
    train_labels.npy, test_labels.npy   ints 0-9

MultiBench takes validation as the last 5000 train rows; here it is the last
``val_fraction`` of them (see :func:`validation_count`).

The thesis's MML_Suite layout: ``train_subset.csv``, ``validation_subset.csv`` and
``test_subset.csv`` with columns ``audio``, ``image``, ``label``; each cell is the path of a
``.pt`` tensor (audio 2-D, image 28x28), relative to the CSV's folder or absolute.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tsp_mlflow.data.avdigits import AVDigitsSpec, ensure_avdigits, validation_count
from tsp_mlflow.data.base import MultimodalDataset
from tsp_mlflow.data.batch import Split
from tsp_mlflow.data.checks import (
    expand_root,
    load_npy,
    require_class_labels,
    require_finite,
    require_rows,
    require_same_rows,
)
from tsp_mlflow.errors import DataFormatError

AVMNIST_MODALITIES = ("audio", "image")
NUM_CLASSES = 10
IMAGE_SIDE = 28
AUDIO_SHAPE = (112, 112)
NPY_LAYOUT = (
    "the MultiBench AVMNIST layout (image/ or images/, audio/, train_labels.npy, test_labels.npy)"
)


class AVMNISTDataset(MultimodalDataset):
    """One split of AVMNIST from the MultiBench/MFAS ``.npy`` files, as floats in [0, 1].

    Args:
        root: folder in the MultiBench/MFAS layout.
        split: ``train``, ``val`` or ``test``.
        modalities: which of ``audio`` and ``image`` to return.
        val_fraction: trailing share of the train file used as validation.
    """

    name = "avmnist"
    modality_order = AVMNIST_MODALITIES
    num_classes = NUM_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Split,
        modalities: Sequence[str] = AVMNIST_MODALITIES,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(split, modalities)
        self.root = expand_root(root, self.name, folder=True)
        self.source = str(self.root)
        file_split = "test" if split == "test" else "train"
        label_file = self.root / f"{file_split}_labels.npy"
        labels = require_class_labels(
            load_npy(label_file, NPY_LAYOUT), NUM_CLASSES, str(label_file)
        )
        rows = _split_rows(len(labels), split, val_fraction)
        self.targets = torch.as_tensor(labels[rows], dtype=torch.long)  # (N,)
        require_rows(len(self.targets), str(label_file), split)
        image_dir = next((d for d in ("image", "images") if (self.root / d).is_dir()), "image")
        self.layout = f"MultiBench/MFAS .npy ({image_dir}/, audio/; validation = last {val_fraction:g} of train)"
        for modality in self.modalities:
            data = self._read_modality(modality, file_split, image_dir, n=len(labels))
            self.inputs[modality] = torch.as_tensor(data[rows], dtype=torch.float32).div_(255.0)

    def _read_modality(self, modality: str, file_split: str, image_dir: str, n: int) -> np.ndarray:
        if modality == "image":
            path = self.root / image_dir / f"{file_split}_data.npy"
            data = load_npy(path, NPY_LAYOUT)
            if data.shape[1:] not in ((IMAGE_SIDE * IMAGE_SIDE,), (IMAGE_SIDE, IMAGE_SIDE)):
                raise DataFormatError(
                    f"expected {path} with shape (N,784) or (N,28,28), found {data.shape}"
                )
            data = data.reshape(len(data), 1, IMAGE_SIDE, IMAGE_SIDE)  # (N, 1, 28, 28)
        else:
            path = self.root / "audio" / f"{file_split}_data.npy"
            data = load_npy(path, NPY_LAYOUT)
            if data.shape[1:] != AUDIO_SHAPE:
                raise DataFormatError(f"expected {path} with shape (N,112,112), found {data.shape}")
            data = data[:, None]  # (N, 1, 112, 112)
        require_finite(data, str(path))
        require_same_rows({path.name: len(data), f"{file_split}_labels.npy": n}, str(path))
        return data


class AVDigitsDataset(AVMNISTDataset):
    """The built-in offline benchmark: generated once into ``cache_dir``, read as AVMNIST.

    Args:
        cache_dir: where generated datasets are cached (created if missing).
        split: ``train``, ``val`` or ``test``.
        modalities: which of ``audio`` and ``image`` to return.
        seed: generator seed; each seed is its own cached dataset.
        val_fraction: share of the non-test rows used for validation.
    """

    name = "avdigits"

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
        self.layout = f"generated avdigits (seed {seed}) in the MultiBench AVMNIST layout"


CSV_FILES: dict[str, str] = {
    "train": "train_subset.csv",
    "val": "validation_subset.csv",
    "test": "test_subset.csv",
}
CSV_COLUMNS = ("audio", "image", "label")


class AVMNISTCSVDataset(MultimodalDataset):
    """AVMNIST in the thesis's MML_Suite layout: CSVs of paths to ``.pt`` tensors.

    Tensors are read with ``torch.load(weights_only=True)`` only (no arbitrary pickle).
    With ``colormap="gist_earth"`` each image goes through MML_Suite's pipeline: matplotlib's
    ``gist_earth`` colormap, then PIL's conversion to greyscale ``L``, then scaling to [0, 1].
    With ``colormap=None`` images are scaled to [0, 1] directly (uint8 / 255, floats as is).

    Args:
        root: the folder holding ``train_subset.csv``, ``validation_subset.csv`` and
            ``test_subset.csv``.
        split: ``train``, ``val`` or ``test``.
        modalities: which of ``audio`` and ``image`` to return.
        colormap: ``gist_earth`` (MML_Suite) or None.
    """

    name = "avmnist_csv"
    modality_order = AVMNIST_MODALITIES
    num_classes = NUM_CLASSES

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Split,
        modalities: Sequence[str] = AVMNIST_MODALITIES,
        colormap: str | None = "gist_earth",
    ) -> None:
        super().__init__(split, modalities)
        if colormap not in (None, "gist_earth"):
            raise DataFormatError(f"colormap={colormap!r} is unknown; use gist_earth or null")
        self.root = expand_root(root, self.name, folder=True)
        table = self.root / CSV_FILES[split]
        self.source = str(table)
        self.layout = f"MML_Suite CSV of .pt tensors ({', '.join(CSV_FILES.values())})"
        rows = _read_csv(table)
        require_rows(len(rows), str(table), split)
        labels = np.array([_int_label(r["label"], table, i) for i, r in enumerate(rows)])
        self.targets = torch.as_tensor(
            require_class_labels(labels, NUM_CLASSES, f"{table} column 'label'"), dtype=torch.long
        )
        for modality in self.modalities:
            tensors = [_load_pt(table.parent, r[modality], table, modality) for r in rows]
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) != 1 or len(next(iter(shapes))) != 2:
                raise DataFormatError(
                    f"{table} column {modality!r}: expected 2-D tensors of one shape"
                    f"{' (28,28)' if modality == 'image' else ''}, found shapes {sorted(shapes)[:3]}"
                )
            if modality == "image":
                if shapes != {(IMAGE_SIDE, IMAGE_SIDE)}:
                    raise DataFormatError(
                        f"{table} column 'image': expected (28,28) tensors, found {shapes.pop()}"
                    )
                data = torch.stack([_image(t, colormap) for t in tensors])  # (N, 28, 28)
            else:
                data = torch.stack([t.float() for t in tensors])  # (N, F, T)
            require_finite(data.numpy(), f"{table} column {modality!r}")
            self.inputs[modality] = data.unsqueeze(1)  # (N, 1, H, W)


def _read_csv(table: Path) -> list[dict[str, str]]:
    if not table.is_file():
        raise DataFormatError(
            f"missing {table}: expected the MML_Suite layout ({', '.join(CSV_FILES.values())}, "
            "columns audio,image,label) under the data root"
        )
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(
                f"{table} lacks column(s) {', '.join(missing)}: expected columns "
                f"{', '.join(CSV_COLUMNS)}, found {', '.join(reader.fieldnames or []) or 'none'}"
            )
        return list(reader)


def _int_label(text: str, table: Path, row: int) -> int:
    try:
        return int(float(text))
    except ValueError:
        raise DataFormatError(
            f"{table} row {row + 2} column 'label': expected an integer 0-9, found {text!r}"
        ) from None


def _load_pt(base: Path, cell: str, table: Path, column: str) -> torch.Tensor:
    path = Path(cell).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise DataFormatError(f"{table} column {column!r} names {path}, which does not exist")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, a pickle of a non-tensor, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataFormatError(
            f"{path} (from {table} column {column!r}) is not a tensor file that loads with "
            f"weights_only=True: {first}"
        ) from None
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise DataFormatError(f"{path} holds a {type(value).__name__}, expected a tensor")
    return value


def _image(t: torch.Tensor, colormap: str | None) -> torch.Tensor:
    """One 28x28 image as float32 in [0, 1], through MML_Suite's colormap when asked."""
    if colormap is None:
        x = t.float()
        return x / 255.0 if not t.is_floating_point() or x.max() > 1.0 else x
    from matplotlib import colormaps
    from PIL import Image

    # Integer pixels index the colormap's lookup table, floats are read as [0, 1]:
    # matplotlib's own rule, which MML_Suite relied on.
    rgba = colormaps["gist_earth"](t.numpy())  # (28, 28, 4) in [0, 1]
    grey = Image.fromarray(np.uint8(rgba * 255)).convert("L")
    return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)


def _split_rows(n_train_file: int, split: Split, val_fraction: float) -> slice:
    if split == "test":
        return slice(None)
    n_val = validation_count(n_train_file, val_fraction)
    return slice(n_train_file - n_val, None) if split == "val" else slice(0, n_train_file - n_val)
