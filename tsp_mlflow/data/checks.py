"""Validation shared by the dataset loaders: every failure names the file, the key, what was
expected and what was found, so a user can fix their files without reading our code."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tsp_mlflow.errors import DataFormatError


def require_file(path: Path, layout: str) -> Path:
    """``path`` if it is a file, else a :class:`DataFormatError` describing ``layout``."""
    if not path.is_file():
        raise DataFormatError(f"missing {path}: expected {layout} under the data root")
    return path


def load_npy(path: Path, layout: str) -> np.ndarray:
    """``np.load`` without pickle; a truncated or corrupt file gets a clear message."""
    require_file(path, layout)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise DataFormatError(
            f"{path} is truncated or not a valid .npy file ({err}); copy it again from the "
            "original release"
        ) from None


def require_shape(
    array: np.ndarray, expected: Sequence[int | None], where: str, hint: str = ""
) -> None:
    """``None`` in ``expected`` matches any size (N is never hard-coded)."""
    ok = array.ndim == len(expected) and all(
        e is None or e == s for e, s in zip(expected, array.shape, strict=True)
    )
    if not ok:
        want = "(" + ",".join("N" if e is None else str(e) for e in expected) + ")"
        raise DataFormatError(
            f"expected {where} with shape {want}, found {tuple(array.shape)}{hint}"
        )


def require_finite(array: np.ndarray, where: str) -> None:
    """Reject NaN (and inf) values: they poison every gradient step silently."""
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise DataFormatError(
                f"{where} holds {int(bad.sum())} NaN/inf values in {len(rows)} rows "
                f"(first rows: {rows[:5].tolist()}); clean or drop those rows"
            )


def require_class_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Integer class labels in ``[0, num_classes)``, shape (N,)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"expected {where} to hold integer class labels with shape (N,), "
            f"found {labels.dtype} {labels.shape}"
        )
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataFormatError(
            f"{where} has labels out of range [0, {num_classes}): "
            f"{sorted(set(labels[bad].tolist()))[:10]}"
        )
    return labels.astype(np.int64)


def require_rows(n: int, where: str, split: str) -> None:
    if n == 0:
        raise DataFormatError(
            f"the {split} split of {where} is empty; check the split boundaries or file"
        )


def require_same_rows(lengths: dict[str, int], where: str) -> None:
    """Every modality and the labels must describe the same samples."""
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise DataFormatError(
            f"{where}: modalities and labels have different numbers of rows ({found}); "
            "the files come from different releases"
        )


def expand_root(root: str | os.PathLike[str] | None, dataset: str, folder: bool = False) -> Path:
    """``data.root`` as a path that exists (a folder, when ``folder``)."""
    if root is None or str(root).strip() in ("", "???"):
        raise DataFormatError(
            f"dataset {dataset!r} needs the folder that holds its files: pass "
            f"data.root=<path> (e.g. -P overrides='data.root=/data/{dataset}')"
        )
    path = Path(root).expanduser()
    if not path.exists():
        raise DataFormatError(f"data.root={str(root)!r} does not exist (dataset {dataset!r})")
    if folder and not path.is_dir():
        raise DataFormatError(
            f"data.root={str(root)!r} is a file; dataset {dataset!r} reads a folder, so pass "
            f"the folder that holds it ({path.parent})"
        )
    return path
