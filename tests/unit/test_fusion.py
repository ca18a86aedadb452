"""Property tests for every fusion option: order, masking, gradients, weights, all-missing."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from tsp_mlflow.config import compose_config, group_options

DIMS = {"audio": 5, "image": 7, "text": 3}
FUSIONS = group_options("model/fusion")
ORDER_FREE = [f for f in FUSIONS if f != "concat"]  # concat's layout *is* the order


def build(option: str, dims: dict[str, int], **overrides: object) -> torch.nn.Module:
    cfg, _ = compose_config("multimodal", [f"model/fusion={option}"])
    torch.manual_seed(0)
    return instantiate(cfg.model.fusion, **overrides)(in_dims=dims).eval()


def batch(seed: int = 0, rows: int = 16) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(rows, d, generator=g) for m, d in DIMS.items()}
    present = torch.rand(rows, len(DIMS), generator=g) > 0.4
    present[~present.any(dim=1), 0] = True  # at least one modality per row
    return feats, present


def test_every_fusion_method_of_the_thesis_is_an_option() -> None:
    # A superset: a new method adds its class and its YAML, and nothing here.
    assert {"concat", "sum", "avg", "max", "gated", "attention"} <= set(FUSIONS)


@pytest.mark.parametrize("option", ORDER_FREE)
@pytest.mark.parametrize("missing", ["exclude", "zero"])
def test_output_does_not_depend_on_modality_order(option: str, missing: str) -> None:
    fusion = build(option, DIMS, missing=missing)
    reversed_dims = dict(reversed(DIMS.items()))
    other = build(option, reversed_dims, missing=missing)
    other.load_state_dict(fusion.state_dict())  # same weights, keyed by modality name
    feats, present = batch()
    out = fusion(feats, present)
    assert torch.allclose(out, other(feats, present.flip(dims=[1])), atol=1e-6)


def test_concat_lays_out_modalities_in_order() -> None:
    fusion = build("concat", DIMS)
    feats, present = batch()
    out = fusion(feats, torch.ones_like(present))
    assert torch.equal(out, torch.cat([feats[m] for m in DIMS], dim=1))


@pytest.mark.parametrize("option", FUSIONS)
def test_masking_a_modality_equals_leaving_it_out(option: str) -> None:
    fusion = build(option, DIMS)
    feats, present = batch(1)
    present[:, 2] = False
    present[~present.any(dim=1), 0] = True
    dropped = {m: x for m, x in feats.items() if m != "text"}
    out = fusion(feats, present)
    assert torch.allclose(out, fusion(dropped, present), atol=1e-6)
    noisy = {**feats, "text": feats["text"] * 100 + 3}  # a masked input's values are ignored
    assert torch.allclose(out, fusion(noisy, present), atol=1e-6)


@pytest.mark.parametrize("option", FUSIONS)
@pytest.mark.parametrize("missing", ["exclude", "zero"])
def test_a_masked_encoder_gets_zero_gradient(option: str, missing: str) -> None:
    fusion = build(option, DIMS, **({} if option == "concat" else {"missing": missing}))
    feats, present = batch(2)
    feats = {m: x.clone().requires_grad_(True) for m, x in feats.items()}
    fusion(feats, present).pow(2).sum().backward()
    for i, m in enumerate(DIMS):
        grad = feats[m].grad
        assert torch.all(grad[~present[:, i]] == 0), m
        assert grad[present[:, i]].abs().sum() > 0, m  # present ones do learn


@pytest.mark.parametrize("option", ["gated", "attention"])
def test_gate_and_attention_weights_over_present_modalities_sum_to_one(option: str) -> None:
    fusion = build(option, DIMS)
    feats, present = batch(3)
    fusion(feats, present)
    weights = fusion.last_weights  # gated: (B, M, dim); attention: (B, M)
    mask = present if weights.ndim == 2 else present.unsqueeze(-1).expand_as(weights)
    assert torch.allclose(weights.sum(dim=1), torch.ones_like(weights.sum(dim=1)), atol=1e-6)
    assert torch.all(weights[~mask] == 0)
    assert torch.all(weights[mask] > 0)


def test_avg_averages_over_present_only_unless_zero_filled() -> None:
    feats, present = batch(4)
    exclude, zero = build("avg", DIMS), build("avg", DIMS, missing="zero")
    zero.load_state_dict(exclude.state_dict())
    n = present.sum(dim=1, keepdim=True).float()
    assert torch.allclose(exclude(feats, present) * n / len(DIMS), zero(feats, present), atol=1e-6)


@pytest.mark.parametrize("option", FUSIONS)
def test_the_all_missing_case_raises(option: str) -> None:
    fusion = build(option, DIMS)
    feats, present = batch(5)
    present[3] = False
    with pytest.raises(ValueError, match="no modality present: there is nothing to fuse"):
        fusion(feats, present)
