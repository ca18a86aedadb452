"""The pieces of multi-process training that need no process group: how a global batch
is split across ranks, how val/test are sharded, and what torchrun refuses up front."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.training.distributed import (
    RankBatches,
    Ranks,
    check_batch_size,
    check_supported,
    launched,
    shard_loaders,
)


def global_batches(rows: int, size: int, seed: int) -> list[list[int]]:
    sampler = RandomSampler(range(rows), generator=torch.Generator().manual_seed(seed))
    return list(BatchSampler(sampler, size, drop_last=False))


@pytest.mark.parametrize(
    ("rows", "size", "world"), [(23, 5, 2), (20, 4, 4), (10, 7, 3), (11, 5, 2), (13, 5, 4)]
)
def test_ranks_split_exactly_the_single_process_batches(rows: int, size: int, world: int) -> None:
    expected = global_batches(rows, size, seed=3)
    shards = [
        list(
            RankBatches(
                BatchSampler(
                    RandomSampler(range(rows), generator=torch.Generator().manual_seed(3)),
                    size,
                    drop_last=False,
                ),
                Ranks(r, world),
            )
        )
        for r in range(world)
    ]
    kept = [b for b in expected if len(b) >= world]  # a batch too short to split is dropped
    assert len(kept) == len(expected) - (0 < rows % size < world)
    assert all(len(s) == len(kept) for s in shards)
    for step, batch in enumerate(kept):
        parts = [shards[r][step] for r in range(world)]
        assert sorted(sum(parts, [])) == sorted(batch)  # the same rows, each once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    sampler = BatchSampler(range(rows), size, drop_last=False)
    assert len(RankBatches(sampler, Ranks(0, world))) == len(kept)


def test_shard_loaders_cover_val_in_order_and_keep_the_train_generator() -> None:
    data = TensorDataset(torch.arange(11))
    generator = torch.Generator().manual_seed(0)
    loaders = {
        "train": DataLoader(data, batch_size=4, shuffle=True, generator=generator),
        "val": DataLoader(data, batch_size=4),
    }
    assert shard_loaders(loaders, Ranks()) is loaders  # one process: untouched
    views = [shard_loaders(loaders, Ranks(r, 3)) for r in range(3)]
    val = [int(x) for v in views for (batch,) in v["val"] for x in batch]
    assert val == list(range(11))  # contiguous shards, in rank order
    assert all(v["train"].generator is generator for v in views)  # checkpoints restore it
    with pytest.raises(UserInputError, match="the train split has 11 rows, fewer than the 12"):
        shard_loaders(loaders, Ranks(0, 12))


def test_a_rank_shard_of_a_split_with_missing_modalities_still_evaluates_observed() -> None:
    from tsp_mlflow.data.missing import WithMissingModalities
    from tsp_mlflow.training.loop import has_missing

    complete = TensorDataset(torch.arange(4))
    complete.modalities = ["audio", "image"]  # type: ignore[attr-defined]
    data = WithMissingModalities(complete, torch.ones(4, 2, dtype=torch.bool))
    loaders = {
        "train": DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator()),
        "val": DataLoader(data, batch_size=2),
    }
    assert has_missing(loaders["val"])
    assert has_missing(shard_loaders(loaders, Ranks(1, 2))["val"])


def test_torchrun_refusals_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    check_supported(gradient="mmpareto")  # one process: anything goes
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert launched() == Ranks(1, 2, 1)
    with pytest.raises(UserInputError, match="gradient=mmpareto under torchrun.*one process"):
        check_supported(gradient="mmpareto")
    with pytest.raises(UserInputError, match="imputation=predicted"):
        check_supported(gradient="joint", imputation="predicted")
    with pytest.raises(UserInputError, match="objective=contrastive"):
        check_supported(gradient="joint", objective="contrastive")
    with pytest.raises(UserInputError, match="give at least 2 rows"):
        check_batch_size(1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UserInputError, match="RANK=2 is not within WORLD_SIZE=2"):
        launched()
