"""Encoders, concat fusion with zero-fill, the late-fusion model and per-pattern evaluation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from tsp_mlflow.data.batch import all_patterns, pattern_name
from tsp_mlflow.models import ConcatFusion, LateFusionModel, MLPHead, ResNetEncoder, SmallCNN
from tsp_mlflow.training.loop import evaluate, fit
from tsp_mlflow.training.runtime import resolve_device
from tsp_mlflow.training.tasks import MulticlassTask


@pytest.mark.parametrize("side", [28, 112, 65])
def test_small_cnn_maps_any_input_size_to_out_dim(side: int) -> None:
    enc = SmallCNN(out_dim=24)
    assert enc(torch.rand(3, 1, side, side)).shape == (3, 24) and enc.out_dim == 24


@pytest.mark.parametrize(("depth", "out_dim", "side"), [(18, 64, 112), (34, 128, 28)])
def test_thesis_resnet_presets_take_one_channel(depth: int, out_dim: int, side: int) -> None:
    enc = ResNetEncoder(depth=depth, out_dim=out_dim)
    assert enc.net.conv1.in_channels == 1
    assert enc(torch.rand(2, 1, side, side)).shape == (2, out_dim)
    n_blocks = sum(
        len(layer) for layer in (enc.net.layer1, enc.net.layer2, enc.net.layer3, enc.net.layer4)
    )
    assert n_blocks == {18: 8, 34: 16}[depth]


def test_concat_fusion_zero_fills_missing_modalities() -> None:
    fusion = ConcatFusion({"audio": 3, "image": 2})
    feats = {"audio": torch.ones(2, 3), "image": torch.full((2, 2), 5.0)}
    present = torch.tensor([[True, False], [False, True]])
    out = fusion(feats, present)
    assert out.tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 5, 5]]
    assert (
        fusion({"image": feats["image"]}, torch.ones(2, 2, dtype=torch.bool))[:, :3].abs().sum()
        == 0
    )
    with pytest.raises(ValueError, match=r"present has shape \(2, 3\), expected \(B, 2\)"):
        fusion(feats, torch.ones(2, 3, dtype=torch.bool))


def make_model() -> LateFusionModel:
    torch.manual_seed(0)
    encoders = {"audio": SmallCNN(out_dim=8, width=4), "image": SmallCNN(out_dim=6, width=4)}
    fusion = ConcatFusion({m: e.out_dim for m, e in encoders.items()})
    return LateFusionModel(encoders, fusion, MLPHead(fusion.out_dim, 5, hidden=[7]))


def test_masked_encoder_gets_zero_gradient() -> None:
    model = make_model()
    inputs = {"audio": torch.rand(4, 1, 16, 16), "image": torch.rand(4, 1, 12, 12)}
    present = torch.tensor([[True, False]] * 4)
    model(inputs, present).sum().backward()
    assert all(
        p.grad is None or p.grad.abs().sum() == 0 for p in model.encoders["image"].parameters()
    )
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["audio"].parameters()
    )


def test_pattern_evaluation_by_masking_equals_dropping_the_modality() -> None:
    model = make_model().eval()
    n = 10
    audio, image = torch.rand(n, 1, 16, 16), torch.rand(n, 1, 12, 12)
    target = torch.randint(0, 5, (n,))
    loader = DataLoader(
        [
            {
                "inputs": {"audio": audio[i], "image": image[i]},
                "present": torch.ones(2, dtype=torch.bool),
                "target": target[i],
            }
            for i in range(n)
        ],
        batch_size=4,
    )
    patterns = all_patterns(model.modalities)
    assert [pattern_name(p, model.modalities) for p in patterns] == [
        "audio-image",
        "audio",
        "image",
    ]
    metrics = evaluate(model, loader, patterns, torch.device("cpu"), MulticlassTask(2))
    with torch.no_grad():  # the audio-only model, computed without the image at all
        logits = model({"audio": audio}, torch.tensor([[True, False]] * n))
    expected = float(torch.nn.functional.cross_entropy(logits, target))
    assert metrics["audio"]["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["audio-image"]["loss"] != pytest.approx(expected, rel=1e-5)


def test_fit_learns_a_separable_task_and_keeps_the_best_state() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 1, 4, 4)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    rows = [
        {"inputs": {"audio": x[i]}, "present": torch.ones(1, dtype=torch.bool), "target": y[i]}
        for i in range(256)
    ]
    loader = DataLoader(
        rows, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    encoder = SmallCNN(out_dim=4, width=4)
    model = LateFusionModel({"audio": encoder}, ConcatFusion({"audio": 4}), torch.nn.Linear(4, 2))
    seen: list[int] = []
    result = fit(
        model,
        loader,
        DataLoader(rows, batch_size=64),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        scheduler=None,
        epochs=5,
        patterns=[("audio",)],
        task=MulticlassTask(2),
        monitor_pattern="audio",
        device=torch.device("cpu"),
        on_epoch_end=lambda epoch, metrics, seconds: seen.append(epoch),
    )
    assert seen == [1, 2, 3, 4, 5]
    val_acc = [h["val"]["audio"]["accuracy"] for h in result.history]
    assert result.best_value == max(val_acc) > 0.8
    assert result.best_epoch == val_acc.index(max(val_acc)) + 1
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit(
            model,
            loader,
            loader,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            scheduler=None,
            epochs=0,
            patterns=[("audio",)],
            task=MulticlassTask(2),
            monitor_pattern="audio",
            device=torch.device("cpu"),
        )


def test_device_auto_resolves_and_bad_devices_fail_clearly() -> None:
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="runtime.device='gpu' is not a device"):
        resolve_device("gpu")


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA; the CPU path is tested above"
)
def test_fit_and_evaluate_run_on_cuda() -> None:
    model = make_model()
    rows = [
        {
            "inputs": {"audio": torch.rand(1, 16, 16), "image": torch.rand(1, 12, 12)},
            "present": torch.ones(2, dtype=torch.bool),
            "target": torch.tensor(i % 5),
        }
        for i in range(16)
    ]
    loader = DataLoader(rows, batch_size=8, pin_memory=True)
    result = fit(
        model,
        loader,
        loader,
        optimizer=torch.optim.Adam(model.parameters()),
        scheduler=None,
        epochs=1,
        patterns=all_patterns(model.modalities),
        task=MulticlassTask(10),
        monitor_pattern="audio-image",
        device=resolve_device("auto"),
    )
    assert next(iter(result.best_state.values())).is_cuda


def test_fit_minimises_lower_is_better_monitors_and_skips_nan_epochs() -> None:
    from tsp_mlflow.training.tasks import SentimentRegressionTask

    class Scripted(SentimentRegressionTask):
        """Reports a scripted validation MAE per epoch (NaN first)."""

        values = iter([float("nan"), 0.9, 0.4, 0.7])

        def metrics(self, logits, target):
            out = super().metrics(logits, target)
            if len(target) == 8:  # the validation loader
                out["mae"] = next(self.values)
            return out

    rows = [
        {
            "inputs": {"audio": torch.randn(1, 4, 4)},
            "present": torch.ones(1, dtype=torch.bool),
            "target": torch.tensor(0.5),
        }
        for _ in range(12)
    ]
    model = LateFusionModel(
        {"audio": SmallCNN(out_dim=4, width=4)}, ConcatFusion({"audio": 4}), torch.nn.Linear(4, 1)
    )
    result = fit(
        model,
        DataLoader(rows, batch_size=4),
        DataLoader(rows[:8], batch_size=8),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        scheduler=None,
        epochs=4,
        patterns=[("audio",)],
        task=Scripted(),
        monitor_pattern="audio",
        device=torch.device("cpu"),
    )
    assert (result.best_epoch, result.best_value) == (3, 0.4)
