"""Fine-tuning modes: frozen encoders do not move (weights or normalisation statistics),
bitfit moves biases only, per-modality learning rates get their own groups."""

from __future__ import annotations

import pytest
import torch

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models import ConcatFusion, LateFusionModel, MLPHead, SmallCNN
from tsp_mlflow.training.finetune import (
    apply_modes,
    encoder_modes,
    param_groups,
    parameter_counts,
)


def model() -> LateFusionModel:
    torch.manual_seed(0)
    encoders = {"audio": SmallCNN(out_dim=8, width=4), "image": SmallCNN(out_dim=6, width=4)}
    fusion = ConcatFusion({m: e.out_dim for m, e in encoders.items()})
    return LateFusionModel(encoders, fusion, MLPHead(fusion.out_dim, 3, hidden=[5]))


def step(net: LateFusionModel, lr: float = 0.1, lrs: dict | None = None) -> None:
    optimizer = torch.optim.SGD(param_groups(net, lrs or {}), lr=lr)
    net.train()
    inputs = {"audio": torch.randn(4, 1, 16, 16), "image": torch.randn(4, 1, 16, 16)}
    loss = net(inputs, torch.ones(4, 2, dtype=torch.bool)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_frozen_encoders_keep_weights_and_statistics() -> None:
    net = model()
    apply_modes(net, {"audio": "frozen", "image": "finetune"})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step(net)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoders.audio."))
    assert not net.encoders["audio"].training and net.encoders["image"].training
    assert any(
        not torch.equal(before[k], after[k]) for k in before if k.startswith("encoders.image.")
    )
    assert not torch.equal(before["head.net.0.weight"], after["head.net.0.weight"])


def test_bitfit_trains_biases_only() -> None:
    net = model()
    apply_modes(net, {"audio": "bitfit", "image": "bitfit"})
    before = {k: p.clone() for k, p in net.named_parameters()}
    step(net)
    for name, p in net.named_parameters():
        moved = not torch.equal(before[name], p)
        if name.startswith("encoders."):
            assert moved == name.endswith(".bias"), name
    counts = parameter_counts(net)
    biases = sum(
        p.numel() for n, p in net.encoders["audio"].named_parameters() if n.endswith("bias")
    )
    assert counts["params/encoder/audio/trainable"] == biases < counts["params/encoder/audio"]
    assert counts["params/trainable"] < counts["params/total"]


def test_per_modality_learning_rates_become_groups() -> None:
    net = model()
    groups = param_groups(net, {"image": 1e-4, "audio": None})
    assert len(groups) == 2 and groups[1]["lr"] == 1e-4
    image = {id(p) for p in net.encoders["image"].parameters()}
    assert {id(p) for p in groups[1]["params"]} == image
    assert not image & {id(p) for p in groups[0]["params"]}
    before = {k: p.clone() for k, p in net.named_parameters()}
    step(net, lr=0.0, lrs={"image": 0.1})  # only the image encoder has a rate
    moved = {
        k.split(".")[1]
        for k, p in net.named_parameters()
        if k.startswith("encoders.") and not torch.equal(before[k], p)
    }
    assert moved == {"image"}


def test_bad_modes_name_the_setting() -> None:
    with pytest.raises(UserInputError, match=r"finetune modes \{'audio': 'thaw'\} are unknown"):
        encoder_modes("finetune", {"audio": "thaw"}, ("audio", "image"))
    with pytest.raises(UserInputError, match=r"finetune.modes names unknown modalities \['text'\]"):
        encoder_modes("finetune", {"text": "frozen"}, ("audio", "image"))
