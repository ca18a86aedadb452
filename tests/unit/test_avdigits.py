"""The built-in dataset: deterministic, stratified, AVMNIST layout, read by the AVMNIST loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tsp_mlflow.data import AVDigitsDataset, AVMNISTDataset
from tsp_mlflow.data.avdigits import (
    DTMF_HZ,
    AVDigitsSpec,
    dtmf_spectrogram,
    ensure_avdigits,
    generate_avdigits,
    remove_pca_energy,
    validation_count,
)
from tsp_mlflow.errors import DataFormatError


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return generate_avdigits(AVDigitsSpec(seed=0))


@pytest.mark.slow
def test_generation_is_deterministic_per_seed(arrays: dict[str, np.ndarray]) -> None:
    again = generate_avdigits(AVDigitsSpec(seed=0))
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    other = generate_avdigits(AVDigitsSpec(seed=1))
    assert not np.array_equal(arrays["audio_train"], other["audio_train"])


def test_arrays_follow_the_multibench_avmnist_layout(arrays: dict[str, np.ndarray]) -> None:
    n_train, n_test = len(arrays["labels_train"]), len(arrays["labels_test"])
    assert n_train + n_test == 1797  # every sklearn digit used exactly once
    assert arrays["image_train"].shape == (n_train, 784)
    assert arrays["audio_test"].shape == (n_test, 112, 112)
    assert arrays["image_train"].dtype == np.uint8 and arrays["audio_train"].dtype == np.uint8
    assert set(np.unique(arrays["labels_train"])) == set(range(10))


def test_splits_are_stratified(arrays: dict[str, np.ndarray]) -> None:
    train_file = arrays["labels_train"]
    n_val = validation_count(len(train_file), 0.2)
    parts = {
        "train": train_file[:-n_val],
        "val": train_file[-n_val:],
        "test": arrays["labels_test"],
    }
    shares = {k: np.bincount(v, minlength=10) / len(v) for k, v in parts.items()}
    for name in ("val", "test"):
        assert np.abs(shares[name] - shares["train"]).max() < 0.02, name


def test_pca_removal_is_fit_on_train_rows_only() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    fit_rows = np.arange(150)
    base = remove_pca_energy(x, fit_rows, 0.75)
    changed = x.copy()
    changed[150:] *= 100  # test rows must not influence the projection
    assert np.allclose(remove_pca_energy(changed, fit_rows, 0.75)[:150], base[:150])
    kept = np.var(base[:150], axis=0).sum() / np.var(x[:150], axis=0).sum()
    assert 0.05 < kept <= 0.25 + 1e-9  # at most 25% of the energy remains


def test_dtmf_spectrogram_peaks_at_the_digits_tones() -> None:
    spec = AVDigitsSpec(snr_db=40.0)  # nearly clean, to check the tone table itself
    for digit, (low, high) in DTMF_HZ.items():
        spectrum = dtmf_spectrogram(digit, np.random.default_rng(digit), spec).mean(axis=1)
        hz = np.arange(len(spectrum)) * spec.sample_rate / spec.n_fft
        low_band, high_band = (hz > 600) & (hz < 1100), (hz > 1100) & (hz < 1700)
        peak_low = hz[low_band][np.argmax(spectrum[low_band])]
        peak_high = hz[high_band][np.argmax(spectrum[high_band])]
        tolerance = spec.sample_rate / spec.n_fft  # one STFT bin (62.5 Hz) covers the 3% jitter
        assert abs(peak_low - low) <= tolerance, digit
        assert abs(peak_high - high) <= tolerance, digit
        assert spectrum[low_band].max() > 3 * np.median(spectrum)


@pytest.mark.slow
def test_cache_is_written_once_and_read_by_the_avmnist_loader(tmp_path: Path) -> None:
    root = ensure_avdigits(tmp_path)
    stamp = (root / "audio" / "train_data.npy").stat().st_mtime_ns
    assert ensure_avdigits(tmp_path) == root
    assert (root / "audio" / "train_data.npy").stat().st_mtime_ns == stamp
    ds = AVMNISTDataset(root, "val", ["image", "audio"], val_fraction=0.2)
    item = ds[0]
    assert ds.modalities == ("audio", "image")  # canonical order, whatever was asked
    assert item["inputs"]["audio"].shape == (1, 112, 112)
    assert item["inputs"]["image"].shape == (1, 28, 28)
    assert (
        float(item["inputs"]["image"].min()) >= 0.0 and float(item["inputs"]["image"].max()) <= 1.0
    )
    assert item["present"].tolist() == [True, True]
    sizes = {s: len(AVDigitsDataset(tmp_path, s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["val"] == validation_count(1437, 0.2)


def write_avmnist(root: Path, n_train: int, n_test: int, image_dir: str = "image") -> None:
    """A tiny AVMNIST in the exact MultiBench/MFAS layout, with an N that is not 60000."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        (root / "audio").mkdir(parents=True, exist_ok=True)
        np.save(
            root / image_dir / f"{split}_data.npy",
            rng.integers(0, 256, (n, 784)).astype(np.float32),
        )
        np.save(
            root / "audio" / f"{split}_data.npy",
            rng.integers(0, 256, (n, 112, 112)).astype(np.uint8),
        )
        np.save(root / f"{split}_labels.npy", rng.integers(0, 10, n))


@pytest.mark.parametrize("image_dir", ["image", "images"])
def test_avmnist_loader_handles_any_n_and_both_image_folder_names(
    tmp_path: Path, image_dir: str
) -> None:
    write_avmnist(tmp_path, n_train=37, n_test=11, image_dir=image_dir)
    train = AVMNISTDataset(tmp_path, "train", val_fraction=0.25)
    val = AVMNISTDataset(tmp_path, "val", val_fraction=0.25)
    test = AVMNISTDataset(tmp_path, "test")
    assert (len(train), len(val), len(test)) == (28, 9, 11)
    labels = np.load(tmp_path / "train_labels.npy")
    assert torch.equal(val.targets, torch.as_tensor(labels[-9:]))  # validation = trailing rows
    raw = np.load(tmp_path / image_dir / "train_data.npy")[0].reshape(28, 28) / 255
    assert torch.allclose(train[0]["inputs"]["image"][0], torch.as_tensor(raw, dtype=torch.float32))


def test_avmnist_loader_names_the_file_and_shape_on_bad_input(tmp_path: Path) -> None:
    write_avmnist(tmp_path, n_train=20, n_test=5)
    np.save(tmp_path / "audio" / "train_data.npy", np.zeros((20, 784), dtype=np.uint8))
    with pytest.raises(
        ValueError, match=r"audio/train_data.npy with shape \(N,112,112\), found \(20, 784\)"
    ):
        AVMNISTDataset(tmp_path, "train")
    with pytest.raises(DataFormatError, match="nowhere' does not exist"):
        AVMNISTDataset(tmp_path / "nowhere", "train")
    (tmp_path / "test_labels.npy").unlink()
    with pytest.raises(
        DataFormatError, match="missing .*test_labels.npy.*MultiBench AVMNIST layout"
    ):
        AVMNISTDataset(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown modality 'text'.*choose from audio, image"):
        AVMNISTDataset(tmp_path, "test", ["text"])
