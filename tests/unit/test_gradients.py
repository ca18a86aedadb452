"""Gradient strategies: MMPareto's direction on constructed gradients (by hand and on
random conflicts), and each strategy's ``.grad`` on a real model against autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from tsp_mlflow.models import ConcatFusion, LateFusionModel, MLPHead, SmallCNN
from tsp_mlflow.training.finetune import apply_modes
from tsp_mlflow.training.gradients import (
    Joint,
    MMPareto,
    Uniform,
    min_norm_weights,
    mmpareto_direction,
)
from tsp_mlflow.training.loop import fit, unimodal_losses
from tsp_mlflow.training.tasks import MulticlassTask


def test_conflicting_gradients_get_the_min_norm_weights_worked_by_hand() -> None:
    g_mm, g_uni = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    # cos = -2 / (2 * sqrt 2) < 0; α_mm = (‖g_u‖² − ⟨g_m, g_u⟩) / ‖g_m − g_u‖² = (2 + 2) / 10.
    direction = mmpareto_direction([g_mm], [g_uni], gamma=1.5)
    assert direction.cosine == pytest.approx(-1 / math.sqrt(2))
    assert (direction.weight_multimodal, direction.weight_unimodal) == pytest.approx((0.4, 0.6))
    h = torch.tensor([0.4, 1.2])  # 2 (0.4 g_mm + 0.6 g_u)
    s_norm, h_norm = math.sqrt(2.0), math.sqrt(0.4**2 + 1.2**2)  # s = g_mm + g_u = (1, 1)
    assert torch.allclose(direction.grads[0], 1.5 * (s_norm / h_norm) * h)
    # The min-norm point of the two: equal, positive inner products with both objectives.
    assert float(direction.grads[0] @ g_mm) > 0 and float(direction.grads[0] @ g_uni) > 0


@pytest.mark.parametrize("seed", range(20))
def test_the_direction_never_opposes_either_objective_when_they_conflict(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 2, 2)]  # one encoder's parameter tensors
    g_mm = [torch.randn(s, generator=gen) for s in shapes]
    g_uni = [torch.randn(s, generator=gen) for s in shapes]
    flat_mm = torch.cat([g.flatten() for g in g_mm])
    flat_uni = torch.cat([g.flatten() for g in g_uni])
    if float(flat_mm @ flat_uni) > 0:  # make them conflict: flip the unimodal gradient
        g_uni = [-g for g in g_uni]
        flat_uni = -flat_uni
    direction = mmpareto_direction(g_mm, g_uni)
    assert direction.cosine <= 0
    assert 0.001 <= direction.weight_multimodal <= 0.999
    # The integrated direction h = 2(α_mm g_mm + α_u g_u) over the encoder's whole flattened
    # gradient is the min-norm point of the two: it opposes neither objective.
    h = torch.cat(
        [
            (2 * (direction.weight_multimodal * a + direction.weight_unimodal * b)).flatten()
            for a, b in zip(g_mm, g_uni, strict=True)
        ]
    )
    assert float(h @ flat_mm) >= -1e-6 and float(h @ flat_uni) >= -1e-6
    # Then the official rescaling, per tensor: γ·max(1, ‖s‖/‖h‖). (Per-tensor factors can
    # tilt the whole vector; with one tensor, as in the hand-worked case, it cannot.)
    for g, a, b in zip(direction.grads, g_mm, g_uni, strict=True):
        h_t = 2 * (direction.weight_multimodal * a + direction.weight_unimodal * b)
        factor = 1.5 * max(1.0, float((a + b).norm() / h_t.norm()))
        assert torch.allclose(g, factor * h_t, atol=1e-6)


def test_agreeing_gradients_get_equal_weights_and_gamma_times_their_sum() -> None:
    g_mm, g_uni = (
        [torch.tensor([1.0, 2.0]), torch.tensor([0.5])],
        [torch.tensor([2.0, 1.0]), torch.tensor([0.1])],
    )
    direction = mmpareto_direction(g_mm, g_uni, gamma=1.5)
    assert direction.cosine > 0
    assert (direction.weight_multimodal, direction.weight_unimodal) == (0.5, 0.5)
    for got, a, b in zip(direction.grads, g_mm, g_uni, strict=True):
        assert torch.allclose(got, 1.5 * (a + b))  # h = s, so the scale is exactly gamma


def test_min_norm_weights_are_clipped() -> None:
    # A tiny unimodal gradient almost opposite a big multimodal one: α_mm ≈ 0 is clipped.
    a_mm, a_uni = min_norm_weights(torch.tensor([10.0, 0.0]), torch.tensor([-0.01, 0.0]))
    assert a_mm == pytest.approx(0.001) and a_uni == pytest.approx(0.999)


def make_model(unimodal: bool = True) -> LateFusionModel:
    torch.manual_seed(0)
    encoders = {"audio": SmallCNN(out_dim=8, width=4), "image": SmallCNN(out_dim=6, width=4)}
    fusion = ConcatFusion({m: e.out_dim for m, e in encoders.items()})
    heads = {m: torch.nn.Linear(e.out_dim, 3) for m, e in encoders.items()} if unimodal else None
    return LateFusionModel(
        encoders, fusion, MLPHead(fusion.out_dim, 3, hidden=[5]), unimodal_heads=heads
    )


def losses(model: LateFusionModel, present: torch.Tensor | None = None):  # noqa: ANN201
    torch.manual_seed(1)
    inputs = {"audio": torch.randn(6, 1, 12, 12), "image": torch.randn(6, 1, 12, 12)}
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    present = torch.ones(6, 2, dtype=torch.bool) if present is None else present
    task = MulticlassTask(3)
    feats = model.encode(inputs)
    mm = task.loss(model.classify(feats, present), target)
    return mm, unimodal_losses(model, feats, present, target, task)


def grads(model: LateFusionModel) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_mmpareto_replaces_encoder_gradients_and_heads_keep_the_uniform_sum() -> None:
    model = make_model()
    mm, uni = losses(model)
    Uniform().backward(model, mm, uni)
    uniform = grads(model)
    model.zero_grad(set_to_none=True)

    mm, uni = losses(model)
    params = dict(model.named_parameters())
    g_mm = torch.autograd.grad(mm, list(params.values()), retain_graph=True, allow_unused=True)
    g_mm = dict(zip(params, g_mm, strict=True))
    stats = MMPareto(gamma=1.5).backward(model, mm, uni)
    got = grads(model)
    for name, value in got.items():
        if name.startswith("encoders."):
            continue
        assert (value is None) == (uniform[name] is None), name
        if value is not None:  # fusion, head and unimodal heads: the uniform sum
            assert torch.allclose(value, uniform[name], atol=1e-6), name
    assert set(stats) == {"audio", "image"}
    for m in ("audio", "image"):
        names = [n for n in params if n.startswith(f"encoders.{m}.")]
        own_uni = torch.autograd.grad(
            losses(model)[1][m], [params[n] for n in names], allow_unused=True
        )
        expected = mmpareto_direction(
            [g_mm[n] for n in names],
            [
                torch.zeros_like(params[n]) if g is None else g
                for n, g in zip(names, own_uni, strict=True)
            ],
        )
        for n, want in zip(names, expected.grads, strict=True):
            assert torch.allclose(got[n], want, atol=1e-5), n
        assert stats[m]["cosine"] == pytest.approx(expected.cosine, abs=1e-5)
        assert stats[m]["weight_multimodal"] + stats[m]["weight_unimodal"] == pytest.approx(1)


def test_joint_trains_no_unimodal_head_and_frozen_encoders_get_no_statistics() -> None:
    model = make_model()
    mm, uni = losses(model)
    Joint().backward(model, mm, uni)
    assert all(p.grad is None for p in model.unimodal_heads.parameters())

    model = make_model()
    apply_modes(model, {"audio": "frozen", "image": "finetune"})
    mm, uni = losses(model)
    stats = MMPareto().backward(model, mm, uni)
    assert set(stats) == {"image"}
    assert all(p.grad is None for p in model.encoders["audio"].parameters())


def test_unimodal_losses_use_only_rows_where_the_modality_is_present() -> None:
    model = make_model()
    present = torch.tensor([[True, True], [True, False], [False, True]] * 2)
    _, with_mask = losses(model, present)
    _, full = losses(model)
    assert not torch.isclose(with_mask["audio"], full["audio"])
    absent = torch.tensor([[True, False]] * 6)
    _, none_image = losses(model, absent)
    assert set(none_image) == {"audio"}  # no row has image: no image loss this step


def test_fit_logs_mmpareto_statistics_and_unimodal_losses_per_epoch() -> None:
    model = make_model()
    gen = torch.Generator().manual_seed(0)
    rows = [
        {
            "inputs": {
                "audio": torch.randn(1, 12, 12, generator=gen),
                "image": torch.randn(1, 12, 12, generator=gen),
            },
            "present": torch.ones(2, dtype=torch.bool),
            "target": torch.tensor(i % 3),
        }
        for i in range(24)
    ]
    loader = DataLoader(rows, batch_size=8)
    result = fit(
        model,
        loader,
        loader,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        scheduler=None,
        epochs=2,
        patterns=[("audio", "image"), ("audio",), ("image",)],
        task=MulticlassTask(3),
        monitor_pattern="audio-image",
        device=torch.device("cpu"),
        gradient=MMPareto(),
    )
    for epoch in result.history:
        assert {"loss_audio", "loss_image"} <= set(epoch["train"]["all"])
        for m in ("audio", "image"):
            stats = epoch["gradient"][m]
            assert -1 <= stats["cosine"] <= 1 and 0 <= stats["conflict"] <= 1
            assert stats["weight_multimodal"] + stats["weight_unimodal"] == pytest.approx(1)
            assert stats["scale"] >= 1.5


def test_bad_mmpareto_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="gradient.gamma must be a positive number"):
        MMPareto(gamma=0)
    with pytest.raises(ValueError, match=r"gradient.min_weight must lie in \(0, 0.5\)"):
        MMPareto(min_weight=0.7)
