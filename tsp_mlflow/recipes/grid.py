"""The grid a pipeline runs: fusion methods x encoder conditions x missing rates x
gradient strategies x missing-embedding imputations x seeds, or a union of such blocks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from itertools import combinations, product
from typing import Any

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
    gradient: str = schema.GRADIENT_JOINT
    imputation: str = schema.IMPUTATION_NONE

    @property
    def key(self) -> tuple[str, str, str, int, str, str]:
        """What identifies a finished cell among a pipeline's children (via their tags)."""
        return (
            self.fusion,
            self.condition,
            f"{self.missing:g}",
            self.seed,
            self.gradient,
            self.imputation,
        )

    @property
    def label(self) -> str:
        extra = "".join(
            f" {value}"
            for value, default in (
                (self.gradient, schema.GRADIENT_JOINT),
                (self.imputation, schema.IMPUTATION_NONE),
            )
            if value != default
        )
        return f"{self.fusion} {self.condition} missing {self.missing:g}{extra} seed {self.seed}"


@dataclass(frozen=True)
class Grid:
    """Fusion runs of a pipeline (``conf/grid/``).

    Args:
        fusions: ``model/fusion`` options.
        conditions: ``scratch``, ``pretrained``, ``contrastive`` (every encoder from one
            contrastive pretrain run), ``<m>[_<m>...]_scratch``, or ``all``.
        missing: missing rates, each applied to every modality in train, val and test.
        gradients: ``gradient`` options (joint, uniform, mmpareto).
        imputations: ``imputation`` options (none, predicted).
        blocks: further products, each a mapping that replaces some of the fields above
            (the others are inherited); the grid is the union of its own product and
            every block's, so a study can cross some factors without all the others.
    """

    fusions: Sequence[str] = ("concat",)
    conditions: Sequence[str] = (schema.CONDITION_SCRATCH, schema.CONDITION_PRETRAINED)
    missing: Sequence[float] = (0.0,)
    gradients: Sequence[str] = (schema.GRADIENT_JOINT,)
    imputations: Sequence[str] = (schema.IMPUTATION_NONE,)
    blocks: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        for name, group in (
            ("fusions", "model/fusion"),
            ("gradients", "gradient"),
            ("imputations", "imputation"),
        ):
            options = group_options(group)
            values = list(getattr(self, name))
            if not values or any(v not in options for v in values):
                raise UserInputError(f"grid.{name}={values}: choose from {', '.join(options)}")
        bad = [r for r in self.missing if not 0.0 <= float(r) < 1.0]
        if bad or not self.missing:
            raise UserInputError(f"grid.missing={list(self.missing)}: rates must lie in [0, 1)")
        known = {f.name for f in fields(self)} - {"blocks"}
        for block in self.blocks:
            unknown = sorted(set(block) - known)
            if unknown:
                raise UserInputError(
                    f"grid.blocks: unknown key(s) {unknown}; a block sets some of "
                    f"{', '.join(sorted(known))}"
                )
            replace(self, blocks=(), **dict(block))  # validates the block's own values

    def products(self) -> list[Grid]:
        """This grid's own product, then one per block (fields inherited from this one)."""
        return [
            replace(self, blocks=()),
            *(replace(self, blocks=(), **dict(block)) for block in self.blocks),
        ]

    def cells(self, modalities: Sequence[str], seeds: int) -> Iterator[Cell]:
        """Every cell once, block by block; within one, missing rate outermost and seed
        innermost-but-one, so a stopped grid has whole blocks of seeds done first."""
        seen: set[tuple[str, str, str, int, str, str]] = set()
        for grid in self.products():
            conditions = expand_conditions(grid.conditions, modalities)
            for missing, fusion, gradient, imputation, seed in product(
                grid.missing, grid.fusions, grid.gradients, grid.imputations, range(seeds)
            ):
                for name, scratch in conditions.items():
                    cell = Cell(fusion, name, scratch, float(missing), seed, gradient, imputation)
                    if cell.key not in seen:
                        seen.add(cell.key)
                        yield cell


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
    scratch: Sequence[str],
    modalities: Sequence[str],
    pretrain_runs: dict[str, str],
    contrastive_run: str | None = None,
) -> str:
    """The ``encoders`` value of a condition: ``audio=scratch,image=run:<id>``; with
    ``contrastive_run``, every encoder comes from that run's ``encoder/<m>``."""
    if contrastive_run is not None:
        return ",".join(
            f"{m}=runs:/{contrastive_run}/{schema.encoder_artifact_path(m)}" for m in modalities
        )
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
    if name in (schema.CONDITION_PRETRAINED, schema.CONDITION_CONTRASTIVE):
        return ()
    if name.endswith("_scratch"):
        wanted = name.removesuffix("_scratch")
        for size in range(1, len(modalities)):
            for scratch in combinations(modalities, size):
                if "_".join(scratch) == wanted:
                    return scratch
    examples = ", ".join(f"{m}_scratch" for m in modalities)
    raise UserInputError(
        f"grid condition {name!r} is unknown; use scratch, pretrained, contrastive, {examples} "
        f"(modalities in dataset order, joined by _), or all"
    )
