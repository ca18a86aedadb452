"""The grid a pipeline runs: fusion methods x encoder conditions x missing rates x seeds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations, product

from tsp_mlflow.config import group_options
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking import schema

ALL_CONDITIONS = "all"


@dataclass(frozen=True)
class Cell:
    fusion: str
    condition: str
    scratch: tuple[str, ...]  # modalities trained from scratch in this condition
    missing: float
    seed: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What identifies a finished cell among a pipeline's children (via their tags)."""
        return (self.fusion, self.condition, f"{self.missing:g}", self.seed)


@dataclass(frozen=True)
class Grid:
    """Fusion runs of a pipeline (``conf/grid/``).

    Args:
        fusions: ``model/fusion`` options.
        conditions: ``scratch``, ``pretrained``, ``<m>[_<m>...]_scratch``, or ``all``.
        missing: missing rates, each applied to every modality in train, val and test.
    """

    fusions: Sequence[str] = ("concat",)
    conditions: Sequence[str] = (schema.CONDITION_SCRATCH, schema.CONDITION_PRETRAINED)
    missing: Sequence[float] = (0.0,)

    def __post_init__(self) -> None:
        options = group_options("model/fusion")
        unknown = [f for f in self.fusions if f not in options]
        if unknown or not self.fusions:
            raise UserInputError(
                f"grid.fusions={list(self.fusions)}: choose from {', '.join(options)}"
            )
        bad = [r for r in self.missing if not 0.0 <= float(r) < 1.0]
        if bad or not self.missing:
            raise UserInputError(f"grid.missing={list(self.missing)}: rates must lie in [0, 1)")

    def cells(self, modalities: Sequence[str], seeds: int) -> Iterator[Cell]:
        """Every cell, missing rate outermost and seed innermost-but-one, so a stopped
        grid has whole (fusion, missing) blocks of seeds done first."""
        conditions = expand_conditions(self.conditions, modalities)
        for missing, fusion, seed in product(self.missing, self.fusions, range(seeds)):
            for name, scratch in conditions.items():
                yield Cell(fusion, name, scratch, float(missing), seed)


def expand_conditions(
    names: Sequence[str], modalities: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """condition name -> modalities from scratch, validated; ``all`` is every subset."""
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        if name == ALL_CONDITIONS:
            for size in range(len(modalities), -1, -1):
                for scratch in combinations(modalities, size):
                    out[condition_for(scratch, modalities)] = scratch
            continue
        out[name] = scratch_of(name, modalities)
    return out


def encoders_for(
    scratch: Sequence[str], modalities: Sequence[str], pretrain_runs: dict[str, str]
) -> str:
    """The ``encoders`` value of a condition: ``audio=scratch,image=run:<id>``."""
    return ",".join(
        f"{m}=" + ("scratch" if m in scratch else f"run:{pretrain_runs[m]}") for m in modalities
    )


def condition_for(scratch: Sequence[str], modalities: Sequence[str]) -> str:
    if len(scratch) == len(modalities):
        return schema.CONDITION_SCRATCH
    if not scratch:
        return schema.CONDITION_PRETRAINED
    return "_".join(m for m in modalities if m in scratch) + "_scratch"


def scratch_of(name: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """The modalities a condition name trains from scratch (the inverse of condition_for)."""
    if name == schema.CONDITION_SCRATCH:
        return tuple(modalities)
    if name == schema.CONDITION_PRETRAINED:
        return ()
    if name.endswith("_scratch"):
        wanted = name.removesuffix("_scratch")
        for size in range(1, len(modalities)):
            for scratch in combinations(modalities, size):
                if "_".join(scratch) == wanted:
                    return scratch
    examples = ", ".join(f"{m}_scratch" for m in modalities)
    raise UserInputError(
        f"grid condition {name!r} is unknown; use scratch, pretrained, {examples} "
        f"(modalities in dataset order, joined by _), or all"
    )
