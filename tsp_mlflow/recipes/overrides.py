"""The one override policy of the recipes that start other runs (the pipeline, the sweep):
which keys they set for every run themselves, and which stage config each override reaches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tsp_mlflow.config import compose_config
from tsp_mlflow.errors import UserInputError


def override_key(override: str) -> str:
    """The key of a Hydra override (``+a.b=1`` -> ``a.b``)."""
    return override.lstrip("+~").partition("=")[0]


@dataclass(frozen=True)
class RunKeys:
    """Keys an orchestrating recipe sets for each run it starts, so a user's override of one
    would be silently replaced: refused, with where that setting lives instead."""

    owner: str  # "the pipeline"
    each: str  # "each run itself"
    keys: tuple[str, ...]
    instead: str  # what to give instead

    def check(self, overrides: Iterable[str]) -> None:
        for item in overrides:
            key = override_key(item)
            if key in self.keys:
                raise UserInputError(
                    f"override {item!r}: {self.owner} sets {key} for {self.each}; "
                    f"use {self.instead}"
                )


PIPELINE_RUN_KEYS = RunKeys(
    "the pipeline",
    "each run itself",
    ("seed", "modality", "encoders"),
    "-P seeds=N, or overrides='pretrain_seed=...' for the encoders' seed",
)
SWEEP_RUN_KEYS = RunKeys(
    "the sweep",
    "every trial",
    ("seed", "encoders"),
    "trial_seed=N for the trials' seed, sweep.conditions=[...] for the encoders",
)


def route_overrides(overrides: Sequence[str], stages: Sequence[str]) -> dict[str, list[str]]:
    """Send each override to every stage config that accepts it; reject one that fits none.

    ``model/fusion=concat`` only reaches ``multimodal``, ``trainer.epochs=3`` both training
    stages, ``pretrain_seed=1`` the pipeline's own config.
    """
    routed: dict[str, list[str]] = {s: [] for s in stages}
    for override in overrides:
        errors = []
        for stage in stages:
            try:
                compose_config(stage, [*routed[stage], override], require_values=False)
            except UserInputError as err:
                errors.append(str(err))
            else:
                routed[stage].append(override)
        if len(errors) == len(stages):
            raise UserInputError(
                f"override {override!r} fits none of the configs ({', '.join(stages)}): "
                f"{errors[-1]}"
            )
    return routed
