"""The sweep's search space: Hydra sweep syntax -> Optuna distributions -> Hydra overrides."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tsp_mlflow.config import compose_config
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.search_space import parse_search_space
from tsp_mlflow.recipes.sweep import split_sweep_overrides

SPACE = {
    "optim.lr": "tag(log, interval(1e-4, 1e-2))",
    "trainer.batch_size": "choice(16, 32, 64)",
    "model.head.dropout": "interval(0.0, 0.5)",
    "model.head.width": "range(8, 33, 8)",
    "trainer.epochs": "tag(int, interval(1, 4))",
    "model/fusion": "choice(concat, sum, gated)",
    "trainer.num_workers": "0",
}


def test_hydra_sweep_syntax_becomes_optuna_distributions() -> None:
    space = parse_search_space(SPACE)
    d = space.distributions
    assert d["optim.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["trainer.batch_size"] == CategoricalDistribution([16, 32, 64])
    assert d["model.head.dropout"] == FloatDistribution(0.0, 0.5)
    # Hydra's range stops before `stop`, as Python's does: 8, 16, 24, 32.
    assert d["model.head.width"] == IntDistribution(8, 32, step=8)
    assert d["trainer.epochs"] == IntDistribution(1, 4)
    assert d["model/fusion"] == CategoricalDistribution(["concat", "sum", "gated"])
    assert space.fixed == ("trainer.num_workers=0",)  # a plain value: the same in every trial


def test_sampled_values_lie_in_the_space_and_become_overrides() -> None:
    space = parse_search_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        values = space.sample(trial)
        assert 1e-4 <= values["optim.lr"] <= 1e-2 and values["trainer.batch_size"] in (16, 32, 64)
        assert values["model.head.width"] in (8, 16, 24, 32)
        overrides = space.overrides(values)
        assert overrides[0] == "trainer.num_workers=0"
        assert f"model/fusion={values['model/fusion']}" in overrides  # an option, unquoted
        assert f"optim.lr={values['optim.lr']!r}" in overrides
        study.tell(trial, 0.0)
    assert space.format("data.note", "a b=c") == "'a b=c'"  # strings are quoted for Hydra
    assert space.format("x.flag", True) == "true" and space.format("x.y", None) == "null"


def test_corners_touch_every_bound_and_every_choice() -> None:
    corners = parse_search_space(SPACE).corners()
    assert {c["model/fusion"] for c in corners} == {"concat", "sum", "gated"}
    assert {c["trainer.batch_size"] for c in corners} == {16, 32, 64}
    assert {c["optim.lr"] for c in corners} == {1e-4, 1e-2}
    assert {c["model.head.width"] for c in corners} == {8, 32}


@pytest.mark.slow
def test_every_corner_of_the_default_spaces_composes() -> None:
    """The shipped spaces name keys and options that exist."""
    for option in ("default", "sensitivity", "pretrain"):
        cfg, _ = compose_config("sweep", [f"sweep={option}"])
        stage = str(cfg.sweep.stage)
        space = parse_search_space(dict(cfg.sweep.params))
        for values in space.corners():
            compose_config(stage, space.overrides(values))


def test_grid_sampler_needs_lists() -> None:
    grid = parse_search_space({"a": "choice(1, 2)", "b": "range(0, 3)"}).grid()
    assert grid == {"a": [1, 2], "b": [0, 1, 2]}
    with pytest.raises(UserInputError, match="grid sampler needs every dimension as a list"):
        parse_search_space({"a": "interval(0, 1)"}).grid()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "sweep.params is empty"),
        ({"a": "1"}, "no dimension to search"),
        ({"a": "interval(1, 1)"}, "interval needs low < high"),
        ({"a": "tag(log, interval(0, 1))"}, "log interval needs a positive low"),
        ({"a": "choice(1, 1)"}, "distinct values"),
        ({"a": "range(5, 1)"}, "is empty"),
        ({"a": "interval(1,"}, "sweep.params.a"),
    ],
)
def test_bad_spaces_say_what_to_write(params: dict[str, str], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_search_space(params)


def test_overrides_in_sweep_syntax_become_dimensions() -> None:
    dims, plain = split_sweep_overrides(
        ["optim.lr=tag(log, interval(1e-5, 1e-1))", "trainer.epochs=3", "seed=1,2", "x=[1,2]"]
    )
    assert dims == {"optim.lr": "tag(log, interval(1e-5, 1e-1))", "seed": "1,2"}
    assert plain == ["trainer.epochs=3", "x=[1,2]"]


def test_bool_choices_new_keys_and_huge_int_ranges() -> None:
    space = parse_search_space(
        {"model.flag": "choice(true, false)", "x": "tag(int, interval(1, 1e9))"}
    )
    assert space.distributions["model.flag"] == CategoricalDistribution([True, False])
    assert space.overrides({"model.flag": False, "x": 5}) == ["model.flag=false", "x=5"]
    assert [c["x"] for c in space.corners()] == [1, 1_000_000_000]  # bounds, not every value
    with pytest.raises(UserInputError, match="choices must be numbers, strings"):
        parse_search_space({"a": "choice([1, 2], [3])"})
    dims, _ = split_sweep_overrides(["+model.extra=choice(1, 2)"])
    assert dims == {"+model.extra": "choice(1, 2)"}  # the + survives: a key to add


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=0,1"], "the sweep sets seed for every trial"),
        (["encoders=pretrained"], "the sweep sets encoders"),
        (["sweep.params.optim.lr=0.1"], "give a search dimension in sweep syntax"),
        (["heartbeat_s=0"], "heartbeat_s=0: give a positive number of seconds"),
        (["sweep.conditions=[nope]"], "grid condition 'nope' is unknown"),
        (["model/fusion=choice(concat, nope)"], "nope"),
        (["sweep/sampler=grid"], "a grid sampler needs every dimension as a list"),
    ],
)
def test_a_bad_sweep_fails_before_any_run(overrides: list[str], message: str) -> None:
    from tsp_mlflow.recipes.sweep import SweepRecipe

    with pytest.raises(UserInputError, match=message):
        SweepRecipe("avdigits", 1, overrides)
