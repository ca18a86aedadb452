"""Every config option composes, builds and trains one step; bad configs fail before any run."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from tsp_mlflow.config import compose_config, group_options, split_overrides
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models import LateFusionModel

SIDE = {"audio": 112, "image": 28}


def one_step(cfg) -> float:
    encoders = {m: instantiate(cfg.model.encoders[m]) for m in cfg.data.modalities}
    fusion = instantiate(cfg.model.fusion)(in_dims={m: e.out_dim for m, e in encoders.items()})
    model = LateFusionModel(
        encoders, fusion, instantiate(cfg.model.head)(in_features=fusion.out_dim)
    )
    optimizer = instantiate(cfg.optim)(model.parameters())
    instantiate(cfg.scheduler)(optimizer)
    inputs = {m: torch.rand(2, 1, SIDE[m], SIDE[m]) for m in cfg.data.modalities}
    loss = model(inputs, torch.ones(2, len(encoders), dtype=torch.bool)).logsumexp(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


OPTIONS = [
    (group, option)
    for group in (
        "model/encoder",
        "model/fusion",
        "model/head",
        "optim",
        "scheduler",
        "trainer",
        "experiment",
        "debug",
    )
    for option in group_options(group)
]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes_builds_and_steps(group: str, option: str) -> None:
    override = (
        [
            f"model/encoder@model.encoders.audio={option}",
            f"model/encoder@model.encoders.image={option}",
        ]
        if group == "model/encoder"
        else [f"{group}={option}"]
    )
    cfg, choices = compose_config("multimodal", override)
    assert torch.isfinite(torch.tensor(one_step(cfg)))
    key = "model/encoder@model.encoders.audio" if group == "model/encoder" else group
    assert choices[key] == option


@pytest.mark.parametrize("name", ["pretrain", "multimodal", "pipeline"])
def test_every_primary_config_composes(name: str) -> None:
    cfg, _ = compose_config(name)
    assert cfg


def test_unknown_choices_list_the_valid_ones() -> None:
    with pytest.raises(
        UserInputError, match="Could not find 'data/imagenet'.*Valid data choices: avdigits"
    ):
        compose_config("multimodal", ["data=imagenet"])
    with pytest.raises(UserInputError, match="Valid model/fusion choices: concat"):
        compose_config("multimodal", ["model/fusion=sum"])


def test_a_typo_in_a_constructor_argument_fails_before_any_run() -> None:
    with pytest.raises(
        UserInputError, match=r"model.head: tsp_mlflow.models.MLPHead does not accept hiddn"
    ):
        compose_config("multimodal", ["+model.head.hiddn=[3]"])
    with pytest.raises(UserInputError, match="Could not override 'optim.lrr'"):
        compose_config("multimodal", ["optim.lrr=0.1"])


def test_overrides_parameter_is_split_like_a_shell() -> None:
    assert split_overrides("optim.lr=1e-3 'model.head.hidden=[64, 32]'") == [
        "optim.lr=1e-3",
        "model.head.hidden=[64, 32]",
    ]
    assert split_overrides("") == []
    with pytest.raises(UserInputError, match="cannot parse overrides"):
        split_overrides("unbalanced 'quote")


def test_pipeline_overrides_reach_exactly_the_stages_that_have_the_key() -> None:
    from tsp_mlflow.recipes.pipeline import route_overrides

    routed = route_overrides(
        ["trainer.epochs=3", "model.head.dropout=0.5", "debug=tiny"], ["pretrain", "multimodal"]
    )
    assert routed == {
        "pretrain": ["trainer.epochs=3", "debug=tiny"],
        "multimodal": ["trainer.epochs=3", "model.head.dropout=0.5", "debug=tiny"],
    }
    with pytest.raises(UserInputError, match="override 'trainer.epochz=3' fits no pipeline stage"):
        route_overrides(["trainer.epochz=3"], ["pretrain", "multimodal"])
