"""``pipeline``: pretrain (or reuse) each encoder, train scratch and pretrained fusion
models over several seeds, then analyse, all as children of one parent run."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import mlflow
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig

from analysis.analyze import Analysis, analyze
from analysis.figures import forest_figure, plt
from analysis.results import AnalysisSettings
from analysis.stats.sequential import SequentialDesign
from tsp_mlflow.config import compose_config, quote
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.contrastive import ContrastivePretrainRecipe
from tsp_mlflow.recipes.grid import Cell, Grid, encoders_for
from tsp_mlflow.recipes.looks import (
    NOT_COMPARED,
    Stratum,
    decide_strata,
    parse_seeds,
    stop_summary,
    stratum_of,
)
from tsp_mlflow.recipes.multimodal import MultimodalRecipe
from tsp_mlflow.recipes.overrides import PIPELINE_RUN_KEYS, override_key, route_overrides
from tsp_mlflow.recipes.pipeline_resume import (
    cell_runs,
    interrupted_pretrain_runs,
    logged_looks,
    recorded_pretrain_runs,
)
from tsp_mlflow.recipes.pretrain import PretrainRecipe
from tsp_mlflow.recipes.shared_pretraining import pretrain_or_reuse
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import redact_overrides
from tsp_mlflow.tracking.resume import check_resumable, clear_stop_reason
from tsp_mlflow.tracking.session import tracked_run
from tsp_mlflow.training.progress import CellProgress

STAGE_CONFIGS = ("pretrain", "multimodal")
# Set by the pipeline for every run it creates; an override of them would be ignored.
# Set per grid cell: choose them with grid.fusions / grid.missing / ... instead.
GRID_KEYS = ("model/fusion", "missing", "gradient", "imputation")


@dataclass
class PipelineResult:
    run_id: str
    pretrain_runs: dict[str, str]
    reused: dict[str, bool]
    fusion_runs: list[str]
    analysis: Analysis
    contrastive_run: str | None = None
    looks: tuple[int, ...] = ()  # seed counts at the looks taken (seeds=auto)
    stop_reason: str = ""


class PipelineRecipe:
    """Compose and validate every stage before the parent run starts.

    Args:
        dataset: a ``data/`` option.
        seeds: fusion runs per grid cell (seeds 0 .. seeds-1), or ``auto``: adaptive seeds
            under the ``seeds`` config's group-sequential design.
        epochs: epochs for every stage (None keeps the configs' value).
        overrides: Hydra overrides; each goes to every stage config that has its key.
        resume: a pipeline run id: continue that run, skipping its finished cells.
    """

    def __init__(
        self,
        dataset: str,
        seeds: int | str,
        epochs: int | None,
        overrides: Sequence[str],
        resume: str | None = None,
    ) -> None:
        fixed = parse_seeds(seeds)
        # objective.* configures the contrastive pretraining only (the supervised config has
        # no such keys), so it is set aside for that recipe.
        objective: list[str] = []
        PIPELINE_RUN_KEYS.check(overrides)
        for item in overrides:
            key = override_key(item)
            group = key.split(".")[0]
            if group in GRID_KEYS:
                raise UserInputError(
                    f"override {item!r}: the pipeline sets {group} per grid cell; "
                    "use grid.fusions=[...], grid.missing=[...], grid.gradients=[...] or "
                    "grid.imputations=[...] (or grid=fusions, grid=missing, grid=methods)"
                )
            if key == "objective":
                raise UserInputError(
                    f"override {item!r}: the pipeline picks each pretraining's objective "
                    "itself; add contrastive to grid.conditions for contrastive encoders"
                )
            if group == "objective":
                objective.append(item)
        common = [f"data={dataset}"] + ([f"trainer.epochs={epochs}"] if epochs is not None else [])
        rest = [o for o in overrides if o not in objective]
        routed = route_overrides([*common, *rest], ("pipeline", *STAGE_CONFIGS))
        self.cfg, _ = compose_config("pipeline", routed["pipeline"])
        self.analysis = analysis_settings(self.cfg.analysis)
        self.grid: Grid = build_grid(self.cfg.grid)
        self.design: SequentialDesign | None = None if fixed else sequential_design(self.cfg.seeds)
        seeds = fixed if fixed else self.design.max  # the cells a study may come to run
        self.resume = resume or None
        # Prefixed: `mlflow run` already logs the raw entry-point parameters unprefixed.
        self.params = {
            "pipeline.dataset": dataset,
            "pipeline.seeds": str(fixed) if fixed else "auto",
            "pipeline.epochs": "config" if epochs is None else str(epochs),
            "pipeline.overrides": " ".join(redact_overrides(overrides)) or "none",
            "pipeline.pretrain_seed": str(self.cfg.pretrain_seed),
            "pipeline.grid.fusions": ",".join(self.grid.fusions),
            "pipeline.grid.conditions": ",".join(self.grid.conditions),
            "pipeline.grid.missing": ",".join(f"{r:g}" for r in self.grid.missing),
        }
        if (
            tuple(self.grid.gradients) != (schema.GRADIENT_JOINT,)
            or tuple(self.grid.imputations) != (schema.IMPUTATION_NONE,)
            or self.grid.blocks
        ):  # logged only when used: a default pipeline's params stay as before
            self.params["pipeline.grid.gradients"] = ",".join(self.grid.gradients)
            self.params["pipeline.grid.imputations"] = ",".join(self.grid.imputations)
            self.params["pipeline.grid.blocks"] = json.dumps(
                [dict(b) for b in self.grid.blocks], sort_keys=True
            )
        if self.design is not None:  # the design is part of what a resume must match
            self.params |= {
                f"pipeline.seeds.{k}": str(v)
                for k, v in (
                    ("min", self.design.min),
                    ("step", self.design.step),
                    ("max", self.design.max),
                    ("spending", self.design.spending),
                    ("futility", self.design.futility),
                    ("stop", self.design.stop),
                )
            }
        if self.resume:
            check_resumable(
                self.resume, stage=schema.STAGE_PIPELINE, params=self.params, allow_finished=True
            )
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
        self.cells = list(self.grid.cells(self.modalities, seeds))
        # Contrastive pretraining, once, when a cell uses it.
        self.contrastive = None
        if any(c.condition == schema.CONDITION_CONTRASTIVE for c in self.cells):
            self.contrastive = ContrastivePretrainRecipe(
                compose_config(
                    "pretrain",
                    [
                        *routed["pretrain"],
                        "objective=contrastive",
                        *objective,
                        f"seed={self.cfg.pretrain_seed}",
                    ],
                )[0]
            )
        elif objective:
            raise UserInputError(
                f"overrides {objective} configure contrastive pretraining, which this grid "
                "does not run; add contrastive to grid.conditions (or use grid=methods)"
            )
        # Validates every fusion config now; the pretrained arms need encoder runs first.
        self._multimodal_overrides = routed["multimodal"]
        conditions = {c.condition for c in self.cells}
        for arm, name in (("a", self.analysis.a), ("b", self.analysis.b)):
            if name not in conditions:
                raise UserInputError(
                    f"the closing analysis compares analysis.{arm}={name!r}, which the grid does "
                    f"not run (grid.conditions: {', '.join(sorted(conditions))}); add it to "
                    f"grid.conditions or set analysis.{arm} to one of them"
                )
        for cell in {
            replace(c, condition="scratch", scratch=tuple(self.modalities), seed=0)
            for c in self.cells
        }:
            probe = self._fusion_recipe(cell, {})
        if self.design is not None:
            check_auto_seeds(probe, self.analysis)

    def _fusion_recipe(
        self, cell: Cell, pretrain_runs: dict[str, str], contrastive_run: str | None = None
    ) -> MultimodalRecipe:
        from_contrastive = cell.condition == schema.CONDITION_CONTRASTIVE
        encoders = encoders_for(
            cell.scratch,
            self.modalities,
            pretrain_runs,
            contrastive_run if from_contrastive else None,
        )
        rate = f"{cell.missing:g}"
        cfg, choices = compose_config(
            "multimodal",
            [
                *self._multimodal_overrides,
                f"model/fusion={cell.fusion}",
                f"seed={cell.seed}",
                f"encoders={quote(encoders)}",
                f"missing.train={rate}",
                f"missing.val={rate}",
                f"missing.test={rate}",
                f"gradient={cell.gradient}",
                f"imputation={cell.imputation}",
            ],
        )
        return MultimodalRecipe(cfg, fusion_name=choices["model/fusion"], condition=cell.condition)

    def run(self) -> PipelineResult:
        tags = {
            schema.STAGE: schema.STAGE_PIPELINE,
            schema.DATASET: self.dataset,
            schema.MODALITIES: ",".join(self.modalities),
        }
        with tracked_run(
            run_name=f"pipeline-{self.dataset}", tags=tags, run_id=self.resume
        ) as parent:
            if not self.resume:  # a resumed run has them already (checked equal)
                mlflow.log_params(self.params)
            else:  # it runs again: no stale "reaped" or "interrupted" error on it
                clear_stop_reason(parent.info.run_id)
            experiment_id = parent.info.experiment_id
            if self.resume:  # the encoders its finished cells used, else go on with them
                pretrain_runs, reused = recorded_pretrain_runs(parent.info.run_id)
                todo = {m: r for m, r in self.pretrain.items() if m not in pretrain_runs}
                interrupted = interrupted_pretrain_runs(parent.info.run_id)
                more, more_reused = pretrain_or_reuse(todo, experiment_id, interrupted=interrupted)
                pretrain_runs, reused = {**pretrain_runs, **more}, {**reused, **more_reused}
            else:
                pretrain_runs, reused = pretrain_or_reuse(self.pretrain, experiment_id)
            contrastive_run = self._contrastive_run(parent.info.run_id, experiment_id)
            for m in self.modalities:
                mlflow.set_tags(
                    {
                        schema.pipeline_pretrain_tag(m): pretrain_runs[m],
                        schema.pipeline_reused_tag(m): str(reused[m]).lower(),
                    }
                )

            done, cut_short = cell_runs(parent.info.run_id) if self.resume else ({}, {})
            fusion_runs: list[str] = []
            looks: tuple[int, ...] = ()
            stop = ""
            with CellProgress(
                f"pipeline {self.dataset}: fusion runs",
                len(self._cells_until(self.design.min if self.design else 0)),
            ) as bar:

                def train(cells: list[Cell]) -> None:
                    for cell in cells:
                        if cell.key in done:
                            fusion_runs.append(done[cell.key])
                            bar.cell_done(
                                f"multimodal {cell.label}: finished earlier, run {done[cell.key]}"
                            )
                            continue
                        recipe = self._fusion_recipe(cell, pretrain_runs, contrastive_run)
                        run_id = recipe.run(nested=True, resume=cut_short.get(cell.key))
                        fusion_runs.append(run_id)
                        bar.cell_done(f"multimodal {cell.label}: run {run_id}")

                if self.design is None:
                    train(self.cells)
                    result = analyze(
                        parent_run=parent.info.run_id, settings=self.analysis, nested=True
                    )
                else:
                    result, looks, stop = self._adaptive(parent.info.run_id, train, bar)
            mlflow.log_text(result.markdown, schema.ANALYSIS_TABLE_ARTIFACT)
            figure = forest_figure(result.results)  # the headline, on the parent itself
            mlflow.log_figure(figure, schema.HEADLINE_FIGURE)
            plt.close(figure)
        return PipelineResult(
            parent.info.run_id,
            pretrain_runs,
            reused,
            fusion_runs,
            result,
            contrastive_run,
            looks,
            stop,
        )

    def _cells_until(self, seeds: int, stopped: Sequence[Stratum] = ()) -> list[Cell]:
        """The cells a look at ``seeds`` seeds needs (all of them for a fixed design)."""
        if self.design is None:
            return self.cells
        return [c for c in self.cells if c.seed < seeds and stratum_of(c) not in stopped]

    def _adaptive(
        self, parent_id: str, train: Callable[[list[Cell]], None], bar: CellProgress
    ) -> tuple[Analysis, tuple[int, ...], str]:
        """``seeds=auto``: train to the first look, analyse, add seeds to the undecided
        strata, and so on. Each look is an analysis child run tagged with its number; a
        resumed pipeline takes the looks it had already taken from their logged tables."""
        design = self.design
        assert design is not None
        strata = list(dict.fromkeys(stratum_of(c) for c in self.cells))
        stopped: dict[Stratum, str] = {}
        reasons: dict[Stratum, str] = {}
        taken: list[int] = []
        earlier = logged_looks(parent_id) if self.resume else {}
        trained: set[tuple] = set()
        result: Analysis | None = None
        for number, seeds in enumerate(design.looks, start=1):
            batch = [c for c in self._cells_until(seeds, tuple(stopped)) if c.key not in trained]
            bar.extend(max(0, len(batch) - (bar.total - bar.done)))
            train(batch)
            trained.update(c.key for c in batch)
            taken.append(seeds)
            last = number == len(design.looks)
            if number in earlier:
                comparison, full = earlier[number]
                result = None  # recomputed below if this look turns out to be the last
                print(
                    f"look {number} ({seeds} seeds): analysed earlier, run "
                    f"{comparison.attrs['run_id']}",
                    flush=True,
                )
            else:
                result = analyze(
                    parent_run=parent_id,
                    settings=self.analysis,
                    nested=True,
                    design=design,
                    look=number,
                )
                comparison, full = result.results.comparison, result.results.full_pattern
            open_strata = [k for k in strata if k not in stopped]
            decision = decide_strata(comparison, full, open_strata, design, last_look=last)
            for stratum, why in decision.stops.items():
                if why is not None:
                    stopped[stratum] = why
                    reasons[stratum] = decision.reasons[stratum]
            decided = sum(1 for k in open_strata if decision.stops[k] not in (None, NOT_COMPARED))
            print(
                f"look {number} ({seeds} seeds): {decided} of {len(open_strata)} open strata "
                "stop"
                + (
                    f" ({'; '.join(sorted(set(decision.reasons.values())))})"
                    if decision.reasons
                    else ""
                ),
                flush=True,
            )
            if all(k in stopped for k in strata):
                break
        if result is None:  # the last look was analysed before a resume: its numbers again
            result = analyze(parent_run=parent_id, settings=self.analysis, log=False, design=design)
        stop = stop_summary(reasons, stopped)
        used = max((c.seed + 1 for c in self.cells if c.key in trained), default=0)
        mlflow.set_tags(
            {
                schema.SEEDS_LOOKS: ",".join(map(str, taken)),
                schema.SEEDS_USED: str(used),
                schema.SEEDS_STOP: stop,
            }
        )
        return result, tuple(taken), stop

    def _contrastive_run(self, parent_id: str, experiment_id: str) -> str | None:
        """The contrastive pretrain run the ``contrastive`` cells use: the one this pipeline
        recorded (a resume), an identical FINISHED one, or trained now as a child."""
        if self.contrastive is None:
            return None
        tag = schema.pipeline_contrastive_tag()
        client = MlflowClient()
        recorded = client.get_run(parent_id).data.tags.get(tag)
        if recorded and client.get_run(recorded).info.status == "FINISHED":
            print(f"pretrain contrastive: recorded by this pipeline, run {recorded}", flush=True)
            return recorded
        interrupted = interrupted_pretrain_runs(parent_id) if self.resume else {}
        runs, _ = pretrain_or_reuse(
            {schema.OBJECTIVE_CONTRASTIVE: self.contrastive}, experiment_id, interrupted=interrupted
        )
        mlflow.set_tag(tag, runs[schema.OBJECTIVE_CONTRASTIVE])
        return runs[schema.OBJECTIVE_CONTRASTIVE]


def sequential_design(node: DictConfig) -> SequentialDesign:
    """The ``seeds`` config node as a design; a bad value fails before any run."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        raise UserInputError(
            str(cause) if isinstance(cause, UserInputError) else f"pipeline seeds settings: {err}"
        ) from None


def check_auto_seeds(recipe: MultimodalRecipe, settings: AnalysisSettings) -> None:
    """``seeds=auto`` decides on test metrics whose direction it knows."""
    if bool(recipe.cfg.trainer.get("skip_test", False)):
        raise UserInputError(
            "seeds=auto decides from test metrics, which --skip-test does not compute; give a "
            "fixed -P seeds=N with --skip-test, or drop --skip-test"
        )
    task = recipe.task
    known = (*task.metrics_names, "loss")
    unknown = [m for m in settings.metrics if m not in known]
    if unknown:
        raise UserInputError(
            f"seeds=auto needs metrics whose better direction is known; analysis.metrics "
            f"{unknown} are not {task.name} metrics ({', '.join(known)}); pick from those, or "
            "give a fixed -P seeds=N"
        )


def build_grid(node: DictConfig) -> Grid:
    """The ``grid`` config group as a :class:`Grid`; a bad value fails before any run."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        raise UserInputError(
            f"pipeline grid: {cause if isinstance(cause, UserInputError) else err}"
        ) from None


def analysis_settings(node: DictConfig) -> AnalysisSettings:
    """The ``analysis`` config group as settings; a bad value fails before any run."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserInputError):
            raise UserInputError(f"pipeline analysis settings: {cause}") from None
        raise UserInputError(f"pipeline analysis settings: {err}") from None
