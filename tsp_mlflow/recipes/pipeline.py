"""``pipeline``: pretrain (or reuse) each encoder, train scratch and pretrained fusion
models over several seeds, then analyse, all as children of one parent run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from analysis.analyze import Analysis, analyze
from analysis.results import AnalysisSettings
from tsp_mlflow.config import compose_config, quote
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.multimodal import MultimodalRecipe
from tsp_mlflow.recipes.pretrain import PretrainRecipe
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import flatten, redact_overrides
from tsp_mlflow.tracking.reuse import find_identical_run
from tsp_mlflow.tracking.session import tracked_run

STAGE_CONFIGS = ("pretrain", "multimodal")
# Set by the pipeline for every run it creates; an override of them would be ignored.
PER_RUN_KEYS = ("seed", "modality", "encoders")


@dataclass
class PipelineResult:
    run_id: str
    pretrain_runs: dict[str, str]
    reused: dict[str, bool]
    fusion_runs: list[str]
    analysis: Analysis


class PipelineRecipe:
    """Compose and validate every stage before the parent run starts.

    Args:
        dataset: a ``data/`` option.
        seeds: fusion runs per condition (seeds 0 .. seeds-1).
        epochs: epochs for every stage (None keeps the configs' value).
        overrides: Hydra overrides; each goes to every stage config that has its key.
    """

    def __init__(
        self, dataset: str, seeds: int, epochs: int | None, overrides: Sequence[str]
    ) -> None:
        if not isinstance(seeds, int) or seeds < 1:
            raise UserInputError(
                f"seeds must be a positive integer, got {seeds!r}; e.g. -P seeds=5"
            )
        for item in overrides:
            key = item.lstrip("+~").partition("=")[0]
            if key in PER_RUN_KEYS:
                raise UserInputError(
                    f"override {item!r}: the pipeline sets {key} for each run itself; use "
                    "-P seeds=N, or overrides='pretrain_seed=...' for the encoders' seed"
                )
        common = [f"data={dataset}"] + ([f"trainer.epochs={epochs}"] if epochs is not None else [])
        routed = route_overrides([*common, *overrides], ("pipeline", *STAGE_CONFIGS))
        self.cfg, _ = compose_config("pipeline", routed["pipeline"])
        self.analysis = analysis_settings(self.cfg.analysis)
        self.dataset = dataset
        self.seeds = seeds
        self.epochs = epochs
        self.overrides = list(overrides)
        self.modalities: list[str] = list(self.cfg.data.modalities)
        self.pretrain = {
            m: PretrainRecipe(
                compose_config(
                    "pretrain",
                    [*routed["pretrain"], f"modality={m}", f"seed={self.cfg.pretrain_seed}"],
                )[0]
            )
            for m in self.modalities
        }
        # Validates the fusion config now; the pretrained arm needs encoder runs first.
        self._multimodal_overrides = routed["multimodal"]
        self._fusion_recipe(seed=0, encoders="scratch")

    def _fusion_recipe(
        self, seed: int, encoders: str, condition: str | None = None
    ) -> MultimodalRecipe:
        cfg, choices = compose_config(
            "multimodal",
            [*self._multimodal_overrides, f"seed={seed}", f"encoders={quote(encoders)}"],
        )
        return MultimodalRecipe(cfg, fusion_name=choices["model/fusion"], condition=condition)

    def run(self) -> PipelineResult:
        tags = {schema.STAGE: schema.STAGE_PIPELINE, schema.DATASET: self.dataset,
                schema.MODALITIES: ",".join(self.modalities)}  # fmt: skip
        with tracked_run(run_name=f"pipeline-{self.dataset}", tags=tags) as parent:
            # Prefixed: `mlflow run` already logs the raw entry-point parameters unprefixed.
            mlflow.log_params(
                {
                    "pipeline.dataset": self.dataset,
                    "pipeline.seeds": self.seeds,
                    "pipeline.epochs": "config" if self.epochs is None else self.epochs,
                    "pipeline.overrides": " ".join(redact_overrides(self.overrides)) or "none",
                    "pipeline.pretrain_seed": self.cfg.pretrain_seed,
                }
            )
            experiment_id = parent.info.experiment_id
            pretrain_runs, reused = {}, {}
            for m, recipe in self.pretrain.items():
                pretrain_tags = recipe.tags()
                existing = find_identical_run(
                    experiment_ids=[experiment_id],
                    stage=schema.STAGE_PRETRAIN,
                    config_hash=pretrain_tags[schema.CONFIG_HASH],
                    code_version=pretrain_tags[schema.CODE_VERSION],
                    params=flatten(recipe.config),
                )
                reused[m] = existing is not None
                pretrain_runs[m] = existing.info.run_id if existing else recipe.run(nested=True)
                mlflow.set_tags(
                    {
                        schema.pipeline_pretrain_tag(m): pretrain_runs[m],
                        schema.pipeline_reused_tag(m): str(reused[m]).lower(),
                    }
                )
                print(
                    f"pretrain {m}: {'reused' if reused[m] else 'trained'} run {pretrain_runs[m]}",
                    flush=True,
                )

            pretrained = ",".join(f"{m}=run:{pretrain_runs[m]}" for m in self.modalities)
            fusion_runs = []
            for seed in range(self.seeds):
                for condition, encoders in (
                    (schema.CONDITION_SCRATCH, "scratch"),
                    (schema.CONDITION_PRETRAINED, pretrained),
                ):
                    run_id = self._fusion_recipe(seed, encoders, condition).run(nested=True)
                    fusion_runs.append(run_id)
                    print(f"multimodal {condition} seed {seed}: run {run_id}", flush=True)

            result = analyze(parent_run=parent.info.run_id, settings=self.analysis, nested=True)
            mlflow.log_text(result.markdown, schema.ANALYSIS_TABLE_ARTIFACT)
        return PipelineResult(parent.info.run_id, pretrain_runs, reused, fusion_runs, result)


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
            raise UserInputError(f"override {override!r} fits no pipeline stage: {errors[0]}")
    return routed


def analysis_settings(node: DictConfig) -> AnalysisSettings:
    """The ``analysis`` config group as settings; a bad value fails before any run."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserInputError):
            raise UserInputError(f"pipeline analysis settings: {cause}") from None
        raise UserInputError(f"pipeline analysis settings: {err}") from None
