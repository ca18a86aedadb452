"""CMU-MOSI (Zadeh et al. 2016): text, audio and vision sequences with a sentiment score.

Three incompatible pickle layouts are in circulation; each split (``train``, ``valid``,
``test``) is a dict of arrays:

=========================  =====================================================  ===========
file                       keys                                                   dims t/a/v
=========================  =====================================================  ===========
MultiBench mosi_raw.pkl    text (N,50,300) GloVe, zero-padded at the front,       300/74/35
                           audio, vision, labels (N,1,1) in [-3, 3], id
MulT mosi_data.pkl         the same keys                                          300/5/20
MMSA aligned_50.pkl /      text (N,50,768) BERT, text_bert (N,3,50), audio,       768/5/20
unaligned_50.pkl           vision, audio_lengths, vision_lengths,
                           regression_labels, classification_labels, raw_text, id
=========================  =====================================================  ===========

Every modality becomes :class:`~tsp_mlflow.data.base.Sequences` padded at the end with
true lengths: MMSA's lengths arrays (text from the BERT mask); for the two word-aligned
layouts, the non-zero steps of the text, which the audio and vision steps align to.
Audio ``-inf`` values (log of silence) become 0, as in MultiBench. The target is the
sentiment score; the task turns it into 3 classes or regresses it.

Pickles are read with an unpickler that only rebuilds NumPy arrays and plain containers:
a dataset file cannot run code.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tsp_mlflow.data.base import MultimodalDataset, Sequences
from tsp_mlflow.data.batch import Split
from tsp_mlflow.data.checks import expand_root, require_file, require_finite, require_rows
from tsp_mlflow.errors import DataFormatError

MOSI_MODALITIES = ("text", "audio", "vision")
Layout = Literal["multibench", "mult", "mmsa"]
LAYOUT_FILES: dict[str, str] = {
    "multibench": "mosi_raw.pkl",
    "mult": "mosi_data.pkl",
    "mmsa": "aligned_50.pkl",
}
LAYOUT_DIMS: dict[str, dict[str, int]] = {
    "multibench": {"text": 300, "audio": 74, "vision": 35},
    "mult": {"text": 300, "audio": 5, "vision": 20},
    "mmsa": {"text": 768, "audio": 5, "vision": 20},
}
LAYOUT_NAMES = {
    "multibench": "MultiBench mosi_raw.pkl",
    "mult": "MulT mosi_data.pkl",
    "mmsa": "MMSA aligned_50/unaligned_50.pkl",
}
FILE_SPLITS: dict[Split, str] = {"train": "train", "val": "valid", "test": "test"}
SENTIMENT_RANGE = 3.0


class MOSIDataset(MultimodalDataset):
    """One split of CMU-MOSI from any of the three pickle layouts.

    Args:
        root: the pickle file, or the folder holding it under its layout's usual name.
        split: ``train``, ``val`` (the file's ``valid``) or ``test``.
        modalities: any of ``text``, ``audio``, ``vision``.
        layout: ``multibench``, ``mult`` or ``mmsa``; the file must match it.
        file: file name inside ``root`` (default: the layout's usual name).
        aligned: MMSA only: True for ``aligned_50`` (audio and vision at the text's 50
            steps), False for ``unaligned_50`` (their own rates); the file must match.
    """

    name = "mosi"
    modality_order = MOSI_MODALITIES

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Split,
        modalities: Sequence[str] = MOSI_MODALITIES,
        layout: Layout = "mmsa",
        file: str | None = None,
        aligned: bool = True,
    ) -> None:
        super().__init__(split, modalities)
        if layout not in LAYOUT_FILES:
            raise DataFormatError(f"layout={layout!r}: choose one of {', '.join(LAYOUT_FILES)}")
        path = expand_root(root, self.name)
        path = path / (file or LAYOUT_FILES[layout]) if path.is_dir() else path
        require_file(path, f"the {LAYOUT_NAMES[layout]} pickle")
        self.source = str(path)
        stat = path.stat()
        content = load_pickle(str(path), stat.st_size, stat.st_mtime_ns)
        found = detect_layout(content, path)
        if found != layout:
            raise DataFormatError(
                f"{path} is in the {LAYOUT_NAMES[found]} layout, not {LAYOUT_NAMES[layout]}; "
                f"use dataset=mosi_{found}"
                + ("" if found != "mmsa" else " (or mosi_mmsa_unaligned)")
            )
        self.layout = f"{LAYOUT_NAMES[layout]} ({path.name})"
        if layout == "mmsa":
            check_alignment(content, aligned, path)
        part = content[FILE_SPLITS[split]]
        where = f"{path}[{FILE_SPLITS[split]!r}]"
        labels = _labels(part, layout, where)
        n = len(labels)
        require_rows(n, str(path), split)
        text = _array(part, "text", where, LAYOUT_DIMS[layout]["text"], n)
        text_lengths = _text_lengths(part, text, layout, where)
        for m in self.modalities:
            values = text if m == "text" else _array(part, m, where, LAYOUT_DIMS[layout][m], n)
            lengths = _lengths(part, m, layout, text_lengths, values, where)
            if layout != "mmsa":
                values = _pack_front_padding(values, lengths)
            self.inputs[m] = Sequences(
                torch.from_numpy(values), torch.as_tensor(lengths, dtype=torch.long)
            )
        self.targets = torch.from_numpy(labels)  # (N,) sentiment in [-3, 3]


@functools.lru_cache(maxsize=2)
def load_pickle(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """The whole pickle (all splits), cached per file version: a pipeline reads it per run."""
    del size, mtime_ns  # part of the cache key only
    data = Path(path).read_bytes()
    try:
        content = SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickle as err:
        raise DataFormatError(f"{path}: {err}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as err:
        raise DataFormatError(
            f"{path} is truncated or not a MOSI pickle ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(content, dict):
        raise DataFormatError(
            f"{path}: expected a dict of splits (train, valid, test), found {type(content).__name__}"
        )
    return content


# Everything a pickle of NumPy arrays, strings and dicts needs, and nothing that runs code.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class UnsafePickle(pickle.UnpicklingError):
    """The pickle names a class outside :data:`SAFE_GLOBALS`."""


class SafeUnpickler(pickle.Unpickler):
    """Rebuilds NumPy arrays and containers only; any other class is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickle(
            f"refusing to load {module}.{name}: a MOSI pickle holds only NumPy arrays and "
            "dicts, so this file is not one (or it tries to run code)"
        )


def detect_layout(content: dict[str, Any], path: Path) -> Layout:
    """Which of the three layouts ``content`` is, from its keys and feature sizes."""
    expected = (
        "expected one of: MultiBench mosi_raw.pkl (train/valid/test with text, audio, vision, "
        "labels; dims 300/74/35), MulT mosi_data.pkl (the same keys, dims 300/5/20), MMSA "
        "aligned_50/unaligned_50.pkl (text, audio, vision, audio_lengths, vision_lengths, "
        "regression_labels; dims 768/5/20)"
    )
    splits = [s for s in FILE_SPLITS.values() if isinstance(content.get(s), dict)]
    if len(splits) != len(FILE_SPLITS):
        raise DataFormatError(
            f"unknown pickle layout in {path}: top-level keys {sorted(map(str, content))}; {expected}"
        )
    train = content["train"]
    keys = set(train)
    dims = {
        m: int(np.shape(train[m])[-1])
        for m in MOSI_MODALITIES
        if m in train and np.ndim(train[m]) == 3
    }
    if {"regression_labels", "text", "audio", "vision"} <= keys:
        return "mmsa"
    if {"labels", "text", "audio", "vision"} <= keys:
        for layout in ("multibench", "mult"):
            if dims == LAYOUT_DIMS[layout]:
                return layout  # type: ignore[return-value]
    raise DataFormatError(
        f"unknown pickle layout in {path}: train keys {sorted(map(str, keys))}, feature dims "
        f"{dims or 'none'}; {expected}"
    )


def check_alignment(content: dict[str, Any], aligned: bool, path: Path) -> None:
    """aligned_50 has audio and vision at the text's steps; unaligned_50 at their own."""
    train = content["train"]
    steps = {m: np.shape(train[m])[1] for m in MOSI_MODALITIES if np.ndim(train[m]) == 3}
    is_aligned = len(set(steps.values())) == 1
    if is_aligned != aligned:
        kind, option = (
            ("aligned", "mosi_mmsa") if is_aligned else ("unaligned", "mosi_mmsa_unaligned")
        )
        raise DataFormatError(
            f"{path} is {kind} (steps per modality {steps}); use dataset={option}"
        )


def _array(part: dict[str, Any], key: str, where: str, dim: int, n: int) -> np.ndarray:
    if key not in part:
        raise DataFormatError(f"{where} has no key {key!r} (found: {', '.join(map(str, part))})")
    values = np.array(part[key], dtype=np.float32)  # a copy: the cached pickle stays intact
    if values.ndim != 3 or values.shape[0] != n or values.shape[2] != dim:
        raise DataFormatError(
            f"expected {where}[{key!r}] with shape ({n},T,{dim}), found {values.shape}"
        )
    if key == "audio":
        values[np.isneginf(values)] = 0.0  # log-energy of silence; MultiBench does the same
    require_finite(values, f"{where}[{key!r}]")
    return values


def _labels(part: dict[str, Any], layout: Layout, where: str) -> np.ndarray:
    key = "regression_labels" if layout == "mmsa" else "labels"
    if key not in part:
        raise DataFormatError(f"{where} has no key {key!r} (found: {', '.join(map(str, part))})")
    raw = np.asarray(part[key])
    labels = raw.reshape(len(raw), -1) if raw.ndim else raw
    if raw.ndim == 0 or labels.shape[1] != 1 or not np.issubdtype(raw.dtype, np.number):
        want = "(N,)" if layout == "mmsa" else "(N,1,1)"
        raise DataFormatError(
            f"expected {where}[{key!r}] with shape {want} floats, found {raw.dtype} {raw.shape}"
        )
    labels = labels[:, 0].astype(np.float32)
    require_finite(labels, f"{where}[{key!r}]")
    outside = np.abs(labels) > SENTIMENT_RANGE
    if outside.any():
        raise DataFormatError(
            f"{where}[{key!r}] has labels out of range [-3, 3]: {labels[outside][:5].tolist()}"
        )
    return labels


def _text_lengths(part: dict[str, Any], text: np.ndarray, layout: Layout, where: str) -> np.ndarray:
    if layout == "mmsa":
        if "text_bert" in part:
            bert = np.asarray(part["text_bert"])
            if bert.ndim != 3 or bert.shape[:2] != (len(text), 3):
                raise DataFormatError(
                    f"expected {where}['text_bert'] with shape ({len(text)},3,L), found {bert.shape}"
                )
            return bert[:, 1].sum(axis=1).astype(np.int64)  # the attention mask
        return np.full(len(text), text.shape[1], dtype=np.int64)
    # Word-aligned layouts pad at the front with all-zero steps.
    return (np.abs(text).sum(axis=2) > 0).sum(axis=1).astype(np.int64)


def _lengths(
    part: dict[str, Any],
    modality: str,
    layout: Layout,
    text_lengths: np.ndarray,
    values: np.ndarray,
    where: str,
) -> np.ndarray:
    key = f"{modality}_lengths"
    if layout == "mmsa" and key in part:
        lengths = np.asarray(part[key], dtype=np.int64).reshape(-1)
        if len(lengths) != len(values) or (lengths < 0).any() or (lengths > values.shape[1]).any():
            found = f"{lengths.min()}-{lengths.max()}" if len(lengths) else "none"
            raise DataFormatError(
                f"{where}[{key!r}] must hold {len(values)} lengths in [0, {values.shape[1]}], "
                f"found {len(lengths)} lengths ranging {found}"
            )
        return lengths
    return np.minimum(text_lengths, values.shape[1])


def _pack_front_padding(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Move each sample's last ``length`` steps to the front: padding at the end, as the
    sequence encoders expect."""
    packed = np.zeros_like(values)
    steps = values.shape[1]
    for i, length in enumerate(lengths):
        if length:
            packed[i, :length] = values[i, steps - length :]
    return packed
