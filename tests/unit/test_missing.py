"""The missing-modality protocol: rates per split and modality, deterministic masks."""

from __future__ import annotations

import pytest
import torch

from tsp_mlflow.data.missing import (
    WithMissingModalities,
    describe_rates,
    missing_mask,
    missing_rates,
)
from tsp_mlflow.errors import UserInputError

MODALITIES = ("text", "audio", "vision")


def test_masks_are_deterministic_given_the_seed_and_keep_one_modality() -> None:
    rates = missing_rates(0.9, MODALITIES, "missing.train")
    a = missing_mask(4000, rates, seed=3, split="train")
    torch.manual_seed(123)  # other randomness does not matter
    assert torch.equal(a, missing_mask(4000, rates, seed=3, split="train"))
    assert not torch.equal(a, missing_mask(4000, rates, seed=4, split="train"))
    assert not torch.equal(a, missing_mask(4000, rates, seed=3, split="test"))
    assert a.any(dim=1).all()  # never all missing
    assert (a.sum(dim=1) == 1).float().mean() > 0.5  # at 90%, most keep exactly one


def test_per_modality_rates_are_honoured() -> None:
    rates = missing_rates({"audio": 0.5}, MODALITIES, "missing.test")
    assert rates == {"text": 0.0, "audio": 0.5, "vision": 0.0}
    mask = missing_mask(20000, rates, seed=0, split="test")
    assert mask[:, 0].all() and mask[:, 2].all()
    assert abs(1 - mask[:, 1].float().mean().item() - 0.5) < 0.02
    assert describe_rates(rates) == "text=0,audio=0.5,vision=0"
    assert describe_rates(missing_rates(0.2, MODALITIES, "x")) == "0.2"


def test_bad_rates_name_the_setting() -> None:
    with pytest.raises(UserInputError, match=r"missing.val: missing rates must lie in \[0, 1\)"):
        missing_rates(1.0, MODALITIES, "missing.val")
    with pytest.raises(UserInputError, match=r"missing.train names unknown modalities \['image'\]"):
        missing_rates({"image": 0.2}, MODALITIES, "missing.train")


def test_the_wrapper_only_changes_present() -> None:
    class Tiny:
        modalities = ("a", "b")

        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> dict:
            return {
                "inputs": {"a": torch.tensor(i), "b": torch.tensor(-i)},
                "present": torch.ones(2, dtype=torch.bool),
                "target": torch.tensor(i),
            }

    mask = torch.tensor([[True, False], [False, True], [True, True]])
    ds = WithMissingModalities(Tiny(), mask)
    assert torch.equal(ds[1]["present"], mask[1]) and ds[1]["inputs"]["a"] == 1
