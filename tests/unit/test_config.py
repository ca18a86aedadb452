"""Every config option composes, builds and trains one step; bad configs fail before any run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tsp_mlflow.config import compose_config, group_options, split_overrides
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models import LateFusionModel

TEXTS = ["a heist goes wrong in the city", "two friends drive across the desert"] * 2
BATCH = 4


def fake_input(node, modality: str):
    """A batch for one encoder config: sequences, features, text or images by its kind."""
    target = node._target_
    if target.endswith(("GRUEncoder", "TransformerSequenceEncoder")):
        values = torch.randn(BATCH, 12, node.in_features)
        return {"values": values, "lengths": torch.tensor([12, 5, 1, 0])}
    if target.endswith("MLPEncoder"):
        return torch.randn(BATCH, node.in_features)
    if target.endswith(("BertTextEncoder", "PretrainedTextEncoder")):
        return TEXTS
    side = {"audio": (112, 112), "image": (28, 28)}.get(modality, (64, 40))
    return torch.rand(BATCH, node.in_channels, *side)


def fake_target(task) -> torch.Tensor:
    if task.target_kind == "class":
        return torch.arange(BATCH) % task.num_outputs
    if task.target_kind == "multilabel":
        return (torch.rand(BATCH, task.num_outputs) > 0.5).float()
    return torch.tensor([-2.4, 0.0, 1.0, 3.0])  # sentiment scores


def one_step(cfg) -> float:
    """Build the configured model and task, then take one optimizer step on a fake batch."""
    task = instantiate(cfg.task)
    encoders = {m: instantiate(cfg.model.encoders[m]) for m in cfg.data.modalities}
    for encoder in encoders.values():
        if hasattr(encoder, "fit_tokenizer") and encoder.tokenizer is None:
            encoder.fit_tokenizer(TEXTS)
    fusion = instantiate(cfg.model.fusion)(in_dims={m: e.out_dim for m, e in encoders.items()})
    head = instantiate(cfg.model.head)(in_features=fusion.out_dim, out_features=task.num_outputs)
    model = LateFusionModel(encoders, fusion, head)
    optimizer = instantiate(cfg.optim)(model.parameters())
    instantiate(cfg.scheduler)(optimizer)
    inputs = {m: fake_input(cfg.model.encoders[m], m) for m in cfg.data.modalities}
    present = torch.ones(BATCH, len(encoders), dtype=torch.bool)
    loss = task.loss(model(inputs, present), task.target(fake_target(task)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# Which dataset each encoder option is built for in the sweep below.
ENCODER_DATA = {
    "mlp": "mmimdb",
    "resnet18_rgb": "mmimdb_posters",
    "gru": "mosi_mmsa",
    "transformer": "mosi_mmsa",
    "bert_scratch": "mmimdb_raw",
    "minilm": "mmimdb_raw",
}


def option_overrides(group: str, option: str) -> list[str]:
    if group == "data":
        return [f"data={option}"] + (["data.root=/data"] if option != "avdigits" else [])
    if group == "task":
        data = {"multiclass": "avdigits", "multilabel": "mmimdb"}.get(option, "mosi_mult")
        root = ["data.root=/data"] if data != "avdigits" else []
        return [f"data={data}", *root, f"task={option}"]
    if group == "model/encoder":
        data = ENCODER_DATA.get(option, "avdigits")
        if data == "avdigits":
            return [f"model/encoder@model.encoders.{m}={option}" for m in ("audio", "image")]
        modality = "image" if data == "mmimdb_posters" else "text"
        return [
            f"data={data}",
            "data.root=/data",
            f"model/encoder@model.encoders.{modality}={option}",
        ]
    return [f"{group}={option}"]


OPTIONS = [
    (group, option)
    for group in (
        "data",
        "task",
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


@pytest.mark.slow
@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_option_composes_builds_and_steps(group: str, option: str) -> None:
    overrides = option_overrides(group, option)
    cfg, choices = compose_config("multimodal", overrides)
    assert torch.isfinite(torch.tensor(one_step(cfg)))
    chosen = [o.partition("=")[0] for o in overrides if o.partition("=")[2] == option]
    assert choices[chosen[0]] == option


@pytest.mark.parametrize("name", ["pretrain", "multimodal", "pipeline", "sweep", "multirun"])
def test_every_primary_config_composes(name: str) -> None:
    cfg, _ = compose_config(name)
    assert cfg


def test_unknown_choices_list_the_valid_ones() -> None:
    with pytest.raises(
        UserInputError, match="Could not find 'data/imagenet'.*Valid data choices: avdigits"
    ):
        compose_config("multimodal", ["data=imagenet"])
    with pytest.raises(
        UserInputError,
        match=f"Valid model/fusion choices: {', '.join(group_options('model/fusion'))}",
    ):
        compose_config("multimodal", ["model/fusion=mean"])


def test_a_typo_in_a_constructor_argument_fails_before_any_run() -> None:
    with pytest.raises(
        UserInputError, match=r"model.head: tsp_mlflow.models.MLPHead does not accept hiddn"
    ):
        compose_config("multimodal", ["+model.head.hiddn=[3]"])
    with pytest.raises(UserInputError, match="unknown config key 'optim.lrr'"):
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
    from tsp_mlflow.recipes.overrides import route_overrides

    routed = route_overrides(
        ["trainer.epochs=3", "model.head.dropout=0.5", "debug=tiny"], ["pretrain", "multimodal"]
    )
    assert routed == {
        "pretrain": ["trainer.epochs=3", "debug=tiny"],
        "multimodal": ["trainer.epochs=3", "model.head.dropout=0.5", "debug=tiny"],
    }
    with pytest.raises(
        UserInputError, match="override 'trainer.epochz=3' fits none of the configs"
    ):
        route_overrides(["trainer.epochz=3"], ["pretrain", "multimodal"])


def test_tsp_config_path_adds_the_users_own_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    mine = (
        (Path(__file__).parents[2] / "conf" / "data" / "avdigits.yaml")
        .read_text()
        .replace("name: avdigits", "name: mine")
    )
    (tmp_path / "data" / "mine.yaml").write_text(mine)
    assert "mine" not in group_options("data")
    monkeypatch.setenv("TSP_CONFIG_PATH", str(tmp_path))
    assert {"mine", "avdigits"} <= set(group_options("data"))
    cfg, choices = compose_config("multimodal", ["data=mine"])
    assert cfg.data.name == "mine" and choices["data"] == "mine"
    assert compose_config("multimodal", [])[0].data.name == "avdigits"  # conf/ still first
    monkeypatch.setenv("TSP_CONFIG_PATH", str(tmp_path / "absent"))
    with pytest.raises(
        UserInputError, match=r"TSP_CONFIG_PATH names .*absent, which is not a folder"
    ):
        group_options("data")
