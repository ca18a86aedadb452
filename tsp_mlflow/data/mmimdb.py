"""MM-IMDb (Arevalo et al. 2017): movie plots and posters, 23-genre multilabel.

Two published layouts:

* ``multimodal_imdb.hdf5`` (the release MultiBench and MFAS read): ``features`` (N,300)
  mean word2vec of the plot, ``vgg_features`` (N,4096) VGG16 fc features of the poster,
  ``images`` (N,3,256,160) posters, ``genres`` (N,23) multi-hot. Rows are train, dev, test
  in that order; the boundaries come from the file's Fuel ``split`` attribute, else the
  published ones (15552 / 18160).
* the raw folder (``mmimdb.tar.gz``): ``<id>.json`` (``plot``: a list of strings,
  ``genres``: a list of names) and ``<id>.jpeg`` per movie, in ``dataset/`` or the root, and
  ``split.json`` (``train``/``dev``/``test`` id lists). This is the path for real text
  encoders: the plot stays text and the encoder tokenizes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsp_mlflow.data.base import MultimodalDataset, cached_file_digest
from tsp_mlflow.data.batch import Split
from tsp_mlflow.data.checks import (
    expand_root,
    require_file,
    require_finite,
    require_rows,
    require_same_rows,
)
from tsp_mlflow.errors import DataFormatError

MMIMDB_MODALITIES = ("text", "image")
# Arevalo's 23 genres, most frequent first (the order of the hdf5's genre columns).
MMIMDB_GENRES = (
    "Drama",
    "Comedy",
    "Romance",
    "Thriller",
    "Crime",
    "Action",
    "Adventure",
    "Horror",
    "Documentary",
    "Mystery",
    "Sci-Fi",
    "Fantasy",
    "Family",
    "Biography",
    "War",
    "History",
    "Music",
    "Animation",
    "Musical",
    "Western",
    "Sport",
    "Short",
    "Film-Noir",
)
HDF5_FILE = "multimodal_imdb.hdf5"
HDF5_KEYS = "features, vgg_features, images, genres"
# The published row boundaries: train [0, 15552), dev [15552, 18160), test [18160, N).
DEFAULT_BOUNDARIES = (15552, 18160)
SPLIT_NAMES: dict[str, Split] = {
    "train": "train",
    "dev": "val",
    "valid": "val",
    "val": "val",
    "test": "test",
}
TEXT_SOURCES = {"features": 300}
IMAGE_SOURCES = {"vgg_features": 4096, "images": None}


class MMIMDbDataset(MultimodalDataset):
    """One split of MM-IMDb from ``multimodal_imdb.hdf5``.

    Feature columns are read into memory; raw ``images`` (13 GB in the full release) are
    read row by row while training.

    Args:
        root: the folder holding the file, or the file itself.
        split: ``train``, ``val`` (the release's dev rows) or ``test``.
        modalities: which of ``text`` and ``image`` to return.
        text: ``features`` (mean word2vec, 300).
        image: ``vgg_features`` (VGG16 fc, 4096) or ``images`` (posters, 3x256x160).
        num_labels: width of ``genres`` (23 in the release).
    """

    name = "mmimdb"
    modality_order = MMIMDB_MODALITIES

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Split,
        modalities: Sequence[str] = MMIMDB_MODALITIES,
        text: str = "features",
        image: str = "vgg_features",
        num_labels: int = len(MMIMDB_GENRES),
    ) -> None:
        import h5py

        super().__init__(split, modalities)
        if text not in TEXT_SOURCES:
            raise DataFormatError(f"text={text!r}: choose one of {', '.join(TEXT_SOURCES)}")
        if image not in IMAGE_SOURCES:
            raise DataFormatError(f"image={image!r}: choose one of {', '.join(IMAGE_SOURCES)}")
        path = expand_root(root, self.name)
        path = path / HDF5_FILE if path.is_dir() else path
        require_file(path, f"{HDF5_FILE} (Arevalo's MM-IMDb release)")
        self.source = str(path)
        keys = {"text": text, "image": image}
        try:
            handle = h5py.File(path, "r")
        except OSError as err:
            raise DataFormatError(
                f"{path} is not an HDF5 file, or a truncated one ({err}); expected Arevalo's "
                f"{HDF5_FILE}"
            ) from None
        with handle:
            genres = _dataset(handle, "genres", path)
            n = genres.shape[0]
            start, stop, origin = _boundaries(handle, n, split, path)
            self.layout = f"MM-IMDb hdf5 ({text} + {image}; splits from {origin})"
            require_rows(stop - start, str(path), split)
            labels = np.asarray(genres[start:stop])
            if labels.ndim != 2 or labels.shape[1] != num_labels:
                raise DataFormatError(
                    f"expected {path}['genres'] with shape (N,{num_labels}), found {genres.shape}"
                )
            if not np.isin(labels, (0, 1)).all():
                bad = sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]
                raise DataFormatError(
                    f"{path}['genres'] must be multi-hot 0/1; labels out of range: {bad}"
                )
            self.targets = torch.as_tensor(labels, dtype=torch.float32)  # (N, num_labels)
            self.target_names = _target_names(genres, num_labels)
            for m in self.modalities:
                key = keys[m]
                column = _dataset(handle, key, path)
                width = (TEXT_SOURCES | IMAGE_SOURCES)[key]
                lengths = {f"{key}": column.shape[0], "genres": n}
                require_same_rows(lengths, str(path))
                if key == "images":
                    if column.ndim != 4 or column.shape[1] != 3:
                        raise DataFormatError(
                            f"expected {path}['images'] with shape (N,3,256,160), found {column.shape}"
                        )
                    self.inputs[m] = HDF5Rows(path, key, start, stop, column.shape[1:])
                    continue
                if column.ndim != 2 or column.shape[1] != width:
                    raise DataFormatError(
                        f"expected {path}['{key}'] with shape (N,{width}), found {column.shape}"
                    )
                values = np.asarray(column[start:stop], dtype=np.float32)
                require_finite(values, f"{path}['{key}']")
                self.inputs[m] = torch.from_numpy(values)  # (N, width)


def _dataset(handle: Any, key: str, path: Path) -> Any:
    if key not in handle:
        raise DataFormatError(
            f"{path} has no key {key!r} (found: {', '.join(sorted(handle.keys())) or 'none'}); "
            f"expected Arevalo's MM-IMDb keys {HDF5_KEYS}"
        )
    return handle[key]


def _boundaries(handle: Any, n: int, split: Split, path: Path) -> tuple[int, int, str]:
    """Rows of ``split``: from the Fuel ``split`` attribute when present, else the defaults."""
    if "split" in handle.attrs:
        table = handle.attrs["split"]
        found: dict[str, tuple[int, int]] = {}
        for row in table:
            name = _text(row["split"])
            source, available = _text(row["source"]), bool(row["available"])
            if available and source == "genres" and name in SPLIT_NAMES:
                found[SPLIT_NAMES[name]] = (int(row["start"]), int(row["stop"]))
        if split not in found:
            raise DataFormatError(
                f"{path}: the 'split' attribute has no {split!r} rows for 'genres' "
                f"(found {', '.join(sorted(found)) or 'none'}); expected train, dev and test"
            )
        start, stop = found[split]
        origin = "the file's split attribute"
    else:
        train_end, dev_end = DEFAULT_BOUNDARIES
        if n <= dev_end:
            raise DataFormatError(
                f"{path} has {n} rows and no 'split' attribute; the published boundaries "
                f"({train_end}, {dev_end}) need more than {dev_end} rows. Add a Fuel 'split' "
                "attribute with train/dev/test row ranges"
            )
        start, stop = {"train": (0, train_end), "val": (train_end, dev_end), "test": (dev_end, n)}[
            split
        ]
        origin = f"the published boundaries {train_end}/{dev_end}"
    if not 0 <= start <= stop <= n:
        raise DataFormatError(f"{path}: {split} rows [{start}, {stop}) fall outside the {n} rows")
    return start, stop, origin


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _target_names(genres: Any, num_labels: int) -> tuple[str, ...]:
    raw = genres.attrs.get("target_names")
    if raw is None:
        return MMIMDB_GENRES if num_labels == len(MMIMDB_GENRES) else ()
    names = json.loads(_text(raw))
    return tuple(names)


class HDF5Rows:
    """Rows ``[start, stop)`` of an hdf5 image dataset, read one at a time as floats in [0, 1].

    The file is opened lazily in each DataLoader worker (h5py handles do not survive a fork).
    """

    def __init__(self, path: Path, key: str, start: int, stop: int, shape: tuple[int, ...]) -> None:
        self.path, self.key, self.start, self.stop = path, key, start, stop
        self.shape = tuple(int(s) for s in shape)
        self._file: Any = None

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        row = np.asarray(self._file[self.key][self.start + index], dtype=np.float32)
        return torch.from_numpy(row / 255.0)  # (3, H, W)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}

    def sample_shape(self) -> tuple[int, ...]:
        return self.shape

    def digest_into(self, hasher: Any) -> None:
        def compute(h: Any) -> None:
            import h5py

            with h5py.File(self.path, "r") as f:
                column = f[self.key]
                for lo in range(self.start, self.stop, 256):
                    chunk = np.ascontiguousarray(column[lo : min(lo + 256, self.stop)])
                    h.update(memoryview(chunk).cast("B"))

        hasher.update(
            cached_file_digest(self.path, [self.key, self.start, self.stop], compute).encode()
        )


class MMIMDbRawDataset(MultimodalDataset):
    """One split of MM-IMDb from the raw release: plots as text, posters decoded with PIL.

    Args:
        root: the folder holding ``split.json`` (movies in ``dataset/`` or beside it).
        split: ``train``, ``val`` (the release's ``dev``) or ``test``.
        modalities: which of ``text`` and ``image`` to return.
        image_size: posters are resized to (height, width), the hdf5 release's 256x160.
        genres: the label vocabulary, in column order; other genres are ignored.
    """

    name = "mmimdb_raw"
    modality_order = MMIMDB_MODALITIES

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Split,
        modalities: Sequence[str] = MMIMDB_MODALITIES,
        image_size: Sequence[int] = (256, 160),
        genres: Sequence[str] = MMIMDB_GENRES,
    ) -> None:
        super().__init__(split, modalities)
        root_path = expand_root(root, self.name, folder=True)
        split_file = require_file(
            root_path / "split.json",
            "the raw MM-IMDb layout (split.json, and <id>.json + <id>.jpeg per movie)",
        )
        folder = root_path / "dataset" if (root_path / "dataset").is_dir() else root_path
        self.source = str(root_path)
        self.layout = f"MM-IMDb raw folder (split.json, {folder.name}/<id>.json + <id>.jpeg)"
        ids = _split_ids(split_file, split)
        require_rows(len(ids), str(split_file), split)
        index = {g: i for i, g in enumerate(genres)}
        self.target_names = tuple(genres)
        texts: list[str] = []
        labels = np.zeros((len(ids), len(genres)), dtype=np.float32)
        for row, movie in enumerate(ids):
            meta = _read_json(folder / f"{movie}.json")
            texts.append(_plot(meta, folder / f"{movie}.json"))
            for genre in meta.get("genres", []):
                if genre in index:
                    labels[row, index[genre]] = 1.0
        self.targets = torch.from_numpy(labels)  # (N, len(genres))
        if "text" in self.modalities:
            self.inputs["text"] = texts
        if "image" in self.modalities:
            posters = [folder / f"{movie}.jpeg" for movie in ids]
            for poster in posters:
                require_file(poster, "a poster <id>.jpeg beside each <id>.json")
            self.inputs["image"] = PosterFiles(posters, tuple(image_size))


def _split_ids(split_file: Path, split: Split) -> list[str]:
    table = _read_json(split_file)
    names = [k for k, v in SPLIT_NAMES.items() if v == split and k in table]
    if not names:
        raise DataFormatError(
            f"{split_file} has no {split!r} list (found keys {', '.join(table) or 'none'}); "
            "expected train, dev and test lists of movie ids"
        )
    return [str(x) for x in table[names[0]]]


def _read_json(path: Path) -> dict[str, Any]:
    require_file(path, "the raw MM-IMDb layout")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _plot(meta: dict[str, Any], path: Path) -> str:
    plot = meta.get("plot")
    if isinstance(plot, str):
        return plot
    if isinstance(plot, list) and plot and all(isinstance(p, str) for p in plot):
        return " ".join(plot)  # the release keeps several plot summaries: read them all
    raise DataFormatError(
        f"{path}: key 'plot' must be a non-empty list of strings, found {type(plot).__name__}"
    )


class PosterFiles:
    """Poster JPEGs decoded with PIL on demand, resized to (H, W), as floats in [0, 1]."""

    def __init__(self, paths: list[Path], size: tuple[int, int]) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((self.size[1], self.size[0]), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as err:
            raise DataFormatError(f"{path} is not a readable image ({err})") from None
        array = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)

    def sample_shape(self) -> tuple[int, ...]:
        return (3, *self.size)

    def digest_into(self, hasher: Any) -> None:
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self.paths]
        fingerprint = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
        anchor = self.paths[0].parent

        def compute(h: Any) -> None:
            for path in self.paths:
                h.update(path.name.encode())
                h.update(path.read_bytes())

        hasher.update(cached_file_digest(anchor, [fingerprint], compute).encode())
