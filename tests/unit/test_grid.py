"""Grid cells and encoder-condition names."""

from __future__ import annotations

import pytest

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.grid import Grid, condition_for, expand_conditions, scratch_of

MOSI = ("text", "audio", "vision")


def test_all_expands_to_every_subset_with_consistent_names() -> None:
    conditions = expand_conditions(["all"], MOSI)
    assert len(conditions) == 2 ** len(MOSI)
    assert conditions["scratch"] == MOSI and conditions["pretrained"] == ()
    assert conditions["audio_scratch"] == ("audio",)
    assert conditions["text_vision_scratch"] == ("text", "vision")
    for name, scratch in conditions.items():  # names and sets map both ways
        assert condition_for(scratch, MOSI) == name and scratch_of(name, MOSI) == scratch


def test_cells_cover_the_product() -> None:
    grid = Grid(
        fusions=["concat", "gated"], conditions=["scratch", "audio_scratch"], missing=[0.0, 0.9]
    )
    cells = list(grid.cells(("audio", "image"), seeds=3))
    assert len(cells) == 2 * 2 * 2 * 3
    assert len({c.key for c in cells}) == len(cells)
    assert {c.scratch for c in cells if c.condition == "audio_scratch"} == {("audio",)}


def test_bad_grids_name_the_fix() -> None:
    with pytest.raises(UserInputError, match="grid.fusions=\\['blend'\\]: choose from attention"):
        Grid(fusions=["blend"])
    with pytest.raises(UserInputError, match=r"grid.missing=\[1.0\]: rates must lie in \[0, 1\)"):
        Grid(missing=[1.0])
    with pytest.raises(
        UserInputError, match="grid condition 'image_scratchy' is unknown; use scratch"
    ):
        expand_conditions(["image_scratchy"], ("audio", "image"))


def test_blocks_add_products_that_inherit_the_rest_and_cells_stay_unique() -> None:
    grid = Grid(
        conditions=["scratch", "pretrained"],
        gradients=["uniform", "mmpareto"],
        blocks=[
            {"conditions": ["pretrained"], "missing": [0.5], "imputations": ["none", "predicted"]},
            {"conditions": ["pretrained"], "gradients": ["uniform"]},  # all inside the first
        ],
    )
    cells = list(grid.cells(("audio", "image"), seeds=2))
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2 + 2 * 2 * 2
    # The first block inherits gradients [uniform, mmpareto] and fusions [concat].
    block = {(c.gradient, c.imputation) for c in cells if c.missing == 0.5}
    assert block == {(g, i) for g in ("uniform", "mmpareto") for i in ("none", "predicted")}
    assert {c.fusion for c in cells} == {"concat"}
    contrastive = Grid(conditions=["contrastive"]).cells(("audio", "image"), seeds=1)
    assert [(c.condition, c.scratch) for c in contrastive] == [("contrastive", ())]


def test_bad_method_grids_name_the_fix() -> None:
    with pytest.raises(UserInputError, match=r"grid.gradients=\['pareto'\]: choose from joint"):
        Grid(gradients=["pareto"])
    with pytest.raises(UserInputError, match=r"grid.imputations=\['mean'\]: choose from none"):
        Grid(imputations=["mean"])
    with pytest.raises(UserInputError, match=r"grid.blocks: unknown key\(s\) \['seed'\]"):
        Grid(blocks=[{"seed": [1]}])
    with pytest.raises(UserInputError, match=r"grid.missing=\[1.5\]"):  # blocks are checked too
        Grid(blocks=[{"missing": [1.5]}])
