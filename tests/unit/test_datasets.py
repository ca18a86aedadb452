"""Every real-dataset loader reads a fixture written in its exact published format, and
every malformed file fails with a message naming the file, the key and the expectation."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.formats import (
    MMIMDB_GENRES,
    mosi_content,
    write_avmnist_csv,
    write_avmnist_npy,
    write_mmimdb_hdf5,
    write_mmimdb_raw,
    write_mosi,
)
from tsp_mlflow.data import (
    AVMNISTCSVDataset,
    AVMNISTDataset,
    MMIMDbDataset,
    MMIMDbRawDataset,
    MOSIDataset,
)
from tsp_mlflow.errors import DataFormatError
from tsp_mlflow.recipes.data_check import check_dataset


def test_avmnist_csv_reads_pt_tensors_through_the_mml_suite_colormap(tmp_path: Path) -> None:
    from matplotlib import colormaps
    from PIL import Image

    write_avmnist_csv(tmp_path)
    train = AVMNISTCSVDataset(tmp_path, "train")
    val = AVMNISTCSVDataset(tmp_path, "val", ["image"])
    assert (len(train), len(val), len(AVMNISTCSVDataset(tmp_path, "test"))) == (30, 10, 10)
    sample = train[3]
    assert sample["inputs"]["audio"].shape == (1, 40, 32)
    assert sample["inputs"]["image"].shape == (1, 28, 28) and sample["target"] == 3
    # The image equals MML_Suite's own pipeline: gist_earth on the uint8 pixels, then "L".
    raw = torch.load(tmp_path / "tensors" / "train_3_image.pt", weights_only=True).numpy()
    grey = Image.fromarray(np.uint8(colormaps["gist_earth"](raw) * 255)).convert("L")
    expected = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255)
    assert torch.allclose(sample["inputs"]["image"][0], expected)
    plain = AVMNISTCSVDataset(tmp_path, "train", colormap=None)[3]["inputs"]["image"][0]
    assert torch.allclose(plain, torch.from_numpy(raw.astype(np.float32) / 255))
    assert not torch.allclose(plain, expected)


@pytest.mark.parametrize("aligned", [True, False])
def test_mosi_mmsa_sequences_keep_their_lengths(tmp_path: Path, aligned: bool) -> None:
    name = "aligned_50.pkl" if aligned else "unaligned_50.pkl"
    write_mosi(tmp_path / name, "mmsa", aligned=aligned)
    content = mosi_content("mmsa", aligned=aligned)["valid"]
    ds = MOSIDataset(tmp_path, "val", layout="mmsa", file=name, aligned=aligned)
    assert len(ds) == 8 and ds.modalities == ("text", "audio", "vision")
    assert torch.equal(ds.targets, torch.from_numpy(content["regression_labels"]))
    audio = ds.inputs["audio"]
    assert audio.values.shape == (8, 50 if aligned else 60, 5)
    assert audio.lengths.tolist() == list(content["audio_lengths"])
    assert ds.inputs["text"].lengths.tolist() == content["text_bert"][:, 1].sum(1).tolist()
    assert torch.equal(ds.inputs["vision"].values, torch.from_numpy(content["vision"]))
    train = MOSIDataset(tmp_path / name, "train", ["audio"], layout="mmsa", aligned=aligned)
    kind, option = ("aligned", "mosi_mmsa") if aligned else ("unaligned", "mosi_mmsa_unaligned")
    with pytest.raises(DataFormatError, match=f"is {kind} .*use dataset={option}$"):
        MOSIDataset(tmp_path / name, "train", layout="mmsa", aligned=not aligned)
    assert train.inputs["audio"].values[0, 0, 0] == 0.0  # -inf (silence) became 0
    row = train[1]["inputs"]["audio"]
    assert set(row) == {"values", "lengths"}


@pytest.mark.parametrize("layout", ["multibench", "mult"])
def test_front_padded_mosi_layouts_are_moved_to_end_padding(tmp_path: Path, layout: str) -> None:
    file = {"multibench": "mosi_raw.pkl", "mult": "mosi_data.pkl"}[layout]
    write_mosi(tmp_path / file, layout)
    content = mosi_content(layout)["test"]
    ds = MOSIDataset(tmp_path, "test", layout=layout)
    text = content["text"]
    lengths = (np.abs(text).sum(2) > 0).sum(1)
    assert ds.inputs["text"].lengths.tolist() == lengths.tolist()
    for i, n in enumerate(lengths):
        assert torch.equal(ds.inputs["text"].values[i, :n], torch.from_numpy(text[i, 50 - n :]))
        assert not ds.inputs["vision"].values[i, n:].any()  # padding now at the end
    assert torch.equal(ds.targets, torch.from_numpy(content["labels"].reshape(-1)))
    dims = {m: ds.inputs[m].values.shape[2] for m in ds.modalities}
    assert dims == dict(
        zip(
            ("text", "audio", "vision"),
            {"multibench": (300, 74, 35), "mult": (300, 5, 20)}[layout],
            strict=True,
        )
    )


def test_mosi_layout_mismatch_says_which_option_fits(tmp_path: Path) -> None:
    path = write_mosi(tmp_path / "mosi_data.pkl", "mult")
    with pytest.raises(
        DataFormatError, match=r"in the MulT mosi_data.pkl layout.*use dataset=mosi_mult"
    ):
        MOSIDataset(path, "train", layout="multibench")


def test_mmimdb_hdf5_uses_the_fuel_split_attribute(tmp_path: Path) -> None:
    path = write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5", sizes=(20, 6, 9))
    sizes = {s: len(MMIMDbDataset(tmp_path, s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 20, "val": 6, "test": 9}
    val = MMIMDbDataset(path, "val")
    with h5py.File(path) as f:
        assert torch.equal(val.inputs["text"], torch.from_numpy(f["features"][20:26]))
        assert torch.equal(val.inputs["image"], torch.from_numpy(f["vgg_features"][20:26]))
        assert torch.equal(val.targets, torch.from_numpy(f["genres"][20:26].astype(np.float32)))
        posters = MMIMDbDataset(path, "test", ["image"], image="images")
        assert torch.allclose(
            posters[2]["inputs"]["image"], torch.from_numpy(f["images"][28] / 255.0).float()
        )
    assert val.target_names == MMIMDB_GENRES
    assert pickle.loads(pickle.dumps(posters.inputs["image"]))[0].shape == (3, 64, 40)  # workers


def test_mmimdb_hdf5_without_split_attribute_needs_the_published_size(tmp_path: Path) -> None:
    path = write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5", split_attr=False)
    with pytest.raises(
        DataFormatError, match=r"has 40 rows and no 'split' attribute.*15552, 18160"
    ):
        MMIMDbDataset(path, "train")


@pytest.mark.parametrize("nested", [True, False])
def test_mmimdb_raw_reads_plots_as_text_and_decodes_posters(tmp_path: Path, nested: bool) -> None:
    write_mmimdb_raw(tmp_path, sizes=(10, 4, 5), nested=nested)
    train = MMIMDbRawDataset(tmp_path, "train")
    assert (
        len(train),
        len(MMIMDbRawDataset(tmp_path, "val")),
        len(MMIMDbRawDataset(tmp_path, "test")),
    ) == (10, 4, 5)
    folder = tmp_path / "dataset" if nested else tmp_path
    meta = json.loads((folder / "0000002.json").read_text())
    sample = train[2]
    assert sample["inputs"]["text"] == " ".join(meta["plot"])
    assert sample["inputs"]["image"].shape == (3, 256, 160)
    assert (
        float(sample["inputs"]["image"].min()) >= 0.0
        and float(sample["inputs"]["image"].max()) <= 1.0
    )
    expected = torch.zeros(23)
    expected[MMIMDB_GENRES.index(meta["genres"][0])] = 1  # "Talk-Show" is not a label
    assert torch.equal(sample["target"], expected)


def test_digest_covers_every_row_not_a_prefix(tmp_path: Path) -> None:
    write_avmnist_npy(tmp_path, n_train=40, n_test=12)
    before = AVMNISTDataset(tmp_path, "test").content_digest()
    assert AVMNISTDataset(tmp_path, "test").content_digest() == before  # deterministic
    audio = np.load(tmp_path / "audio" / "test_data.npy")
    audio[-1, -1, -1] ^= 1  # element 12*112*112 - 1: far past MLflow's first 10,000
    np.save(tmp_path / "audio" / "test_data.npy", audio)
    assert AVMNISTDataset(tmp_path, "test").content_digest() != before


def test_data_check_reports_layout_counts_shapes_and_balance(tmp_path: Path) -> None:
    write_mosi(tmp_path / "aligned_50.pkl", "mmsa")
    report = check_dataset("mosi_mmsa", str(tmp_path))
    assert "MMSA aligned_50/unaligned_50.pkl layout" not in report  # layout, not an error
    assert "dataset mosi_mmsa: MMSA aligned_50/unaligned_50.pkl (aligned_50.pkl)" in report
    assert "| train | 16 | sequence (T<=50, D=768)" in report
    content = mosi_content("mmsa")["test"]["regression_labels"]
    assert f"negative {(content < 0).sum()}, neutral {(content == 0).sum()}" in report


# --- malformed files ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    write_avmnist_csv(tmp_path)
    (tmp_path / "tensors" / "test_4_image.pt").unlink()
    with pytest.raises(
        DataFormatError,
        match=r"test_subset.csv column 'image' names .*test_4_image.pt, which does not exist",
    ):
        AVMNISTCSVDataset(tmp_path, "test")
    with pytest.raises(
        DataFormatError,
        match=r"missing .*mosi_raw.pkl: expected the MultiBench mosi_raw.pkl pickle",
    ):
        MOSIDataset(tmp_path, "train", layout="multibench")


def test_wrong_shape(tmp_path: Path) -> None:
    write_avmnist_npy(tmp_path)
    np.save(tmp_path / "image" / "train_data.npy", np.zeros((40, 700), np.uint8))
    with pytest.raises(
        DataFormatError,
        match=r"image/train_data.npy with shape \(N,784\) or \(N,28,28\), found \(40, 700\)",
    ):
        AVMNISTDataset(tmp_path, "train")
    content = mosi_content("mmsa")
    content["valid"]["vision"] = content["valid"]["vision"][:, :, :7]
    (tmp_path / "aligned_50.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(
        DataFormatError, match=r"\['valid'\]\['vision'\] with shape \(8,T,20\), found \(8, 50, 7\)"
    ):
        MOSIDataset(tmp_path, "val", layout="mmsa")


def test_truncated_files(tmp_path: Path) -> None:
    write_avmnist_npy(tmp_path)
    path = tmp_path / "audio" / "test_data.npy"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(
        DataFormatError, match=r"audio/test_data.npy is truncated or not a valid .npy file"
    ):
        AVMNISTDataset(tmp_path, "test")
    mosi = write_mosi(tmp_path / "aligned_50.pkl", "mmsa")
    mosi.write_bytes(mosi.read_bytes()[:-100])
    with pytest.raises(DataFormatError, match="aligned_50.pkl is truncated or not a MOSI pickle"):
        MOSIDataset(mosi, "train", layout="mmsa")


def test_missing_hdf5_key(tmp_path: Path) -> None:
    path = write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5")
    with h5py.File(path, "a") as f:
        del f["vgg_features"]
    with pytest.raises(
        DataFormatError,
        match=r"has no key 'vgg_features' \(found: features, genres, images.*expected Arevalo's MM-IMDb keys",
    ):
        MMIMDbDataset(path, "train")
    assert len(MMIMDbDataset(path, "train", ["text"])) == 24  # the text modality alone still reads


def test_labels_out_of_range(tmp_path: Path) -> None:
    write_avmnist_npy(tmp_path)
    labels = np.load(tmp_path / "test_labels.npy")
    labels[3] = 10
    np.save(tmp_path / "test_labels.npy", labels)
    with pytest.raises(
        DataFormatError, match=r"test_labels.npy has labels out of range \[0, 10\): \[10\]"
    ):
        AVMNISTDataset(tmp_path, "test")
    content = mosi_content("multibench")
    content["test"]["labels"][2] = 4.5
    (tmp_path / "mosi_raw.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(
        DataFormatError, match=r"\['test'\]\['labels'\] has labels out of range \[-3, 3\]: \[4.5\]"
    ):
        MOSIDataset(tmp_path, "test", layout="multibench")
    path = write_mmimdb_hdf5(tmp_path / "m.hdf5")
    with h5py.File(path, "a") as f:
        f["genres"][0, 0] = 2
    with pytest.raises(
        DataFormatError, match=r"\['genres'\] must be multi-hot 0/1; labels out of range: \[2\]"
    ):
        MMIMDbDataset(path, "train")


def test_nan_features(tmp_path: Path) -> None:
    path = write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5")
    with h5py.File(path, "a") as f:
        f["features"][3, 7] = np.nan
    with pytest.raises(
        DataFormatError,
        match=r"\['features'\] holds 1 NaN/inf values in 1 rows \(first rows: \[3\]\)",
    ):
        MMIMDbDataset(path, "train")
    content = mosi_content("mult")
    content["train"]["vision"][5, 40, 0] = np.nan
    (tmp_path / "mosi_data.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(DataFormatError, match=r"\['train'\]\['vision'\] holds 1 NaN/inf"):
        MOSIDataset(tmp_path, "train", layout="mult")


def test_empty_split(tmp_path: Path) -> None:
    write_mmimdb_raw(tmp_path, sizes=(6, 0, 3))
    with pytest.raises(DataFormatError, match=r"the val split of .*split.json is empty"):
        MMIMDbRawDataset(tmp_path, "val")
    path = write_mmimdb_hdf5(tmp_path / "multimodal_imdb.hdf5", sizes=(10, 0, 4))
    with pytest.raises(DataFormatError, match=r"the val split of .*multimodal_imdb.hdf5 is empty"):
        MMIMDbDataset(path, "val")


def test_unknown_pickle_layout(tmp_path: Path) -> None:
    content = mosi_content("mult")
    for split in content.values():
        split["audio"] = split["audio"][:, :, :3]  # dims 300/3/20 match no release
    (tmp_path / "mosi_data.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(
        DataFormatError,
        match=r"unknown pickle layout .*feature dims \{'text': 300, 'audio': 3, 'vision': 20\}; expected one of: MultiBench mosi_raw.pkl",
    ):
        MOSIDataset(tmp_path, "train", layout="mult")
    (tmp_path / "mosi_data.pkl").write_bytes(pickle.dumps({"features": np.zeros(3)}))
    with pytest.raises(
        DataFormatError, match=r"unknown pickle layout .*top-level keys \['features'\]"
    ):
        MOSIDataset(tmp_path, "train", layout="mult")


class Exploit:
    def __reduce__(self):  # what a malicious "dataset" pickle does
        return (print, ("pwned",))


def test_a_pickle_that_runs_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = mosi_content("mmsa")
    content["train"]["id"] = Exploit()
    (tmp_path / "aligned_50.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(DataFormatError, match=r"refusing to load builtins.print"):
        MOSIDataset(tmp_path, "train", layout="mmsa")
    assert "pwned" not in capsys.readouterr().out


def test_data_check_decodes_posters_and_flags_empty_sequences(tmp_path: Path) -> None:
    write_mmimdb_raw(tmp_path / "raw", sizes=(6, 2, 2))
    (tmp_path / "raw" / "dataset" / "0000007.jpeg").write_bytes(b"not a jpeg")
    with pytest.raises(DataFormatError, match=r"0000007.jpeg is not a readable image"):
        check_dataset("mmimdb_raw", str(tmp_path / "raw"))
    content = mosi_content("mmsa")
    content["test"]["text_bert"][:2, 1] = 0  # two utterances without tokens
    (tmp_path / "aligned_50.pkl").write_bytes(pickle.dumps(content))
    report = check_dataset("mosi_mmsa", str(tmp_path / "aligned_50.pkl"))
    assert "warning: 2 test samples have an empty text sequence (length 0)" in report


def test_roots_that_cannot_be_right_are_named(tmp_path: Path) -> None:
    write_avmnist_npy(tmp_path)
    with pytest.raises(DataFormatError, match=r"is a file; dataset 'avmnist' reads a folder"):
        AVMNISTDataset(tmp_path / "train_labels.npy", "train")
    from tsp_mlflow.errors import UserInputError

    with pytest.raises(UserInputError, match="'avdigits' is built in and takes no root"):
        check_dataset("avdigits", str(tmp_path))
