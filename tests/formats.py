"""Tiny datasets written in the exact published on-disk formats (see ../shared DATA.md).

Each writer produces what a user downloads, at a few dozen rows: the same file names, keys,
dtypes, attribute encodings (a Fuel split array in the MM-IMDb hdf5) and padding
conventions (front padding in the MultiBench and MulT MOSI pickles). Labels depend on the
inputs a little, so a model can learn something, but the tests only rely on the format.
"""

from __future__ import annotations

import json
import pickle
from itertools import product
from pathlib import Path

import numpy as np
import torch

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
WORDS = ("heist", "love", "ghost", "war", "family", "space", "detective", "song", "horse", "dream")


def write_avmnist_npy(
    root: Path, n_train: int = 40, n_test: int = 12, image_dir: str = "image", seed: int = 0
) -> Path:
    """MultiBench/MFAS AVMNIST: image/ (N,784) uint8, audio/ (N,112,112) uint8, label files."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        (root / "audio").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (n, 784)).astype(np.uint8)
        image[:, :10] = labels[:, None] * 25  # a learnable trace of the label
        np.save(root / image_dir / f"{split}_data.npy", image)
        np.save(
            root / "audio" / f"{split}_data.npy",
            rng.integers(0, 256, (n, 112, 112)).astype(np.uint8),
        )
        np.save(root / f"{split}_labels.npy", labels.astype(np.int64))
    return root


def write_avmnist_csv(root: Path, rows: dict[str, int] | None = None, seed: int = 0) -> Path:
    """MML_Suite AVMNIST: {train,validation,test}_subset.csv of paths to .pt tensors."""
    rng = np.random.default_rng(seed)
    rows = rows or {"train": 30, "validation": 10, "test": 10}
    (root / "tensors").mkdir(parents=True, exist_ok=True)
    for split, n in rows.items():
        lines = ["audio,image,label"]
        for i in range(n):
            label = i % 10
            audio = torch.from_numpy(rng.random((40, 32), dtype=np.float32))  # 2-D spectrogram
            image = torch.from_numpy(rng.integers(0, 256, (28, 28)).astype(np.uint8))
            audio_path = root / "tensors" / f"{split}_{i}_audio.pt"
            image_path = root / "tensors" / f"{split}_{i}_image.pt"
            torch.save(audio, audio_path)
            torch.save(image, image_path)
            # MML_Suite writes one path per cell; mix relative and absolute paths.
            cell = audio_path.relative_to(root) if i % 2 else audio_path
            lines.append(f"{cell},{image_path.relative_to(root)},{label}")
        (root / f"{split}_subset.csv").write_text("\n".join(lines) + "\n")
    return root


def fuel_split_array(split_dict: dict[str, dict[str, tuple[int, int]]]) -> np.ndarray:
    """Fuel's ``H5PYDataset.create_split_array`` layout, as stored in Arevalo's hdf5."""
    import h5py

    sources = sorted({s for split in split_dict.values() for s in split})
    table = np.empty(
        len(split_dict) * len(sources),
        dtype=np.dtype(
            [
                ("split", "S", max(map(len, split_dict))),
                ("source", "S", max(map(len, sources))),
                ("start", np.int64),
                ("stop", np.int64),
                ("indices", h5py.special_dtype(ref=h5py.Reference)),
                ("available", np.bool_),
                ("comment", "S", 1),
            ]
        ),
    )
    for i, (split, source) in enumerate(product(split_dict, sources)):
        start, stop = split_dict[split].get(source, (0, 0))
        table[i]["split"] = split.encode()
        table[i]["source"] = source.encode()
        table[i]["start"], table[i]["stop"] = start, stop
        table[i]["indices"] = h5py.Reference()
        table[i]["available"] = source in split_dict[split]
        table[i]["comment"] = b"."
    return table


def write_mmimdb_hdf5(
    path: Path,
    sizes: tuple[int, int, int] = (24, 8, 8),
    split_attr: bool = True,
    image_hw: tuple[int, int] = (64, 40),
    seed: int = 0,
) -> Path:
    """Arevalo's multimodal_imdb.hdf5: features, vgg_features, images, genres, imdb_ids,
    sequences, and the Fuel ``split`` attribute (train/dev/test row ranges)."""
    import h5py

    rng = np.random.default_rng(seed)
    n = sum(sizes)
    genres = (rng.random((n, 23)) < 0.15).astype(np.int32)
    genres[np.arange(n), np.arange(n) % 23] = 1  # every movie has a genre, as in the release
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.normal(size=(n, 300)).astype(np.float32))
        f.create_dataset("vgg_features", data=rng.random((n, 4096), dtype=np.float32))
        f.create_dataset("images", data=rng.integers(0, 256, (n, 3, *image_hw)).astype(np.int32))
        ds = f.create_dataset("genres", data=genres)
        ds.attrs["target_names"] = json.dumps(list(MMIMDB_GENRES))
        f.create_dataset(
            "imdb_ids", data=np.array([f"{i:07d}".encode() for i in range(n)], dtype="S7")
        )
        seqs = f.create_dataset("sequences", (n,), dtype=h5py.vlen_dtype(np.int32))
        for i in range(n):
            seqs[i] = rng.integers(0, 1000, rng.integers(3, 20)).astype(np.int32)
        if split_attr:
            a, b = sizes[0], sizes[0] + sizes[1]
            bounds = {"train": (0, a), "dev": (a, b), "test": (b, n)}
            keys = ("features", "vgg_features", "images", "genres", "imdb_ids", "sequences")
            f.attrs["split"] = fuel_split_array(
                {split: dict.fromkeys(keys, rows) for split, rows in bounds.items()}
            )
    return path


def write_mmimdb_raw(
    root: Path, sizes: tuple[int, int, int] = (24, 8, 8), nested: bool = True, seed: int = 0
) -> Path:
    """The raw release: dataset/<id>.json (plot: list of strings, genres) + <id>.jpeg, and
    split.json with train/dev/test id lists."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "dataset" if nested else root
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"{i:07d}" for i in range(sum(sizes))]
    for i, movie in enumerate(ids):
        genre = MMIMDB_GENRES[i % 5]
        words = rng.choice(WORDS, 12).tolist() + [genre.lower()]
        meta = {
            "plot": [" ".join(words), "A second summary of the same film."],
            "genres": [genre, "Talk-Show"],
            "title": f"Movie {i}",
        }
        (folder / f"{movie}.json").write_text(json.dumps(meta))
        size = (int(rng.integers(30, 60)), int(rng.integers(40, 90)))  # posters vary in size
        pixels = rng.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{movie}.jpeg", quality=80)
    a, b = sizes[0], sizes[0] + sizes[1]
    (root / "split.json").write_text(
        json.dumps({"train": ids[:a], "dev": ids[a:b], "test": ids[b:]})
    )
    return root


MOSI_DIMS = {"multibench": (300, 74, 35), "mult": (300, 5, 20), "mmsa": (768, 5, 20)}


def mosi_content(
    layout: str,
    sizes: tuple[int, int, int] = (16, 8, 8),
    aligned: bool = True,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """The dict a MOSI pickle holds, for ``layout`` in multibench, mult, mmsa."""
    rng = np.random.default_rng(seed)
    dt, da, dv = MOSI_DIMS[layout]
    content = {}
    for split, n in zip(("train", "valid", "test"), sizes, strict=True):
        labels = np.round(rng.uniform(-3, 3, n), 1).astype(np.float32)
        labels[::5] = 0.0  # neutral samples exist in MOSI
        lengths = rng.integers(1, 51, n)
        if layout == "mmsa":
            steps_a, steps_v = (50, 50) if aligned else (60, 70)
            len_a = lengths if aligned else rng.integers(1, steps_a + 1, n)
            len_v = lengths if aligned else rng.integers(1, steps_v + 1, n)
            text = np.zeros((n, 50, dt), np.float32)
            bert = np.zeros((n, 3, 50), np.int64)
            audio = np.zeros((n, steps_a, da), np.float32)
            vision = np.zeros((n, steps_v, dv), np.float32)
            for i in range(n):  # MMSA pads at the end
                text[i, : lengths[i]] = rng.normal(size=(lengths[i], dt)) + labels[i]
                bert[i, 0, : lengths[i]] = rng.integers(100, 30000, lengths[i])
                bert[i, 1, : lengths[i]] = 1
                audio[i, : len_a[i]] = rng.normal(size=(len_a[i], da))
                vision[i, : len_v[i]] = rng.normal(size=(len_v[i], dv))
            audio[0, 0, 0] = -np.inf  # COVAREP's log-energy of silence
            content[split] = {
                "raw_text": np.array([f"utterance {i}" for i in range(n)], dtype=object),
                "audio": audio,
                "vision": vision,
                "id": np.array([f"v{i}" for i in range(n)], dtype=object),
                "text": text,
                "text_bert": bert,
                "audio_lengths": len_a.tolist(),
                "vision_lengths": len_v.tolist(),
                "annotations": np.array(["Neutral"] * n, dtype=object),
                "classification_labels": (np.sign(labels) + 1).astype(np.float32),
                "regression_labels": labels,
            }
        else:
            text = np.zeros((n, 50, dt), np.float32)
            audio = np.zeros((n, 50, da), np.float32)
            vision = np.zeros((n, 50, dv), np.float32)
            for i in range(n):  # word-aligned, zero-padded at the front
                text[i, 50 - lengths[i] :] = rng.normal(size=(lengths[i], dt)) + labels[i]
                audio[i, 50 - lengths[i] :] = rng.normal(size=(lengths[i], da))
                vision[i, 50 - lengths[i] :] = rng.normal(size=(lengths[i], dv))
            audio[0, -1, 0] = -np.inf
            content[split] = {
                "vision": vision,
                "audio": audio,
                "text": text,
                "labels": labels.reshape(n, 1, 1),
                "id": np.array([[f"v{i}"] for i in range(n)]),
            }
    return content


def write_mosi(path: Path, layout: str, aligned: bool = True, seed: int = 0, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(mosi_content(layout, aligned=aligned, seed=seed, **kw), f)
    return path
