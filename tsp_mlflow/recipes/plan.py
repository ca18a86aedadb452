"""``tsp --dry-run``: what a command would do, after every check it makes before a run
exists (config, data files, encoder sources), and without creating any run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from mlflow import MlflowClient
from omegaconf import DictConfig

from tsp_mlflow.data.batch import SPLITS, all_patterns, pattern_name
from tsp_mlflow.recipes.setup import make_datasets
from tsp_mlflow.tracking.params import redact_uri
from tsp_mlflow.training.monitoring import MonitoringSettings
from tsp_mlflow.training.runtime import resolve_device

HEADER = "Dry run: every input was checked; no run was created and nothing was trained."


def table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def experiment_line(name: str) -> str:
    """Which experiment a run would go to, and where that store is."""
    client = MlflowClient()
    where = redact_uri(client.tracking_uri)
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):  # `mlflow run` or the user chose it by id
        found = client.get_experiment(os.environ["MLFLOW_EXPERIMENT_ID"])
        return f"{found.name} (id {found.experiment_id}, exists) in {where}"
    shown = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
    exists = client.get_experiment_by_name(shown) is not None
    return f"{shown} ({'exists' if exists else 'would be created'}) in {where}"


def data_line(cfg: DictConfig, modalities: Sequence[str]) -> str:
    """Reads and validates every split, as the run would, and counts its rows."""
    datasets = make_datasets(cfg.data, modalities, missing=cfg.get("missing"), seed=cfg.seed)
    rows = " / ".join(f"{split} {len(datasets[split])}" for split in SPLITS)
    return f"{cfg.data.name} ({', '.join(modalities)}): {rows} rows, read and validated"


def training_lines(cfg: DictConfig) -> list[tuple[str, str]]:
    monitoring = MonitoringSettings.from_config(cfg.get("monitoring"))
    watched = (
        f"every {monitoring.every_n_steps} steps"
        + (", system metrics" if monitoring.system_metrics else "")
        if monitoring.enabled
        else "off"
    )
    steps = []
    if cfg.trainer.get("skip_train"):
        steps.append("skip training (evaluated untrained; registers nothing)")
    if cfg.trainer.get("skip_test"):
        steps.append("skip test")
    return [
        (
            "training",
            f"{cfg.trainer.epochs} epoch{'' if cfg.trainer.epochs == 1 else 's'}, "
            f"batch {cfg.trainer.batch_size}, "
            f"seed {cfg.seed}, device {resolve_device(cfg.runtime.device)}",
        ),
        *([("switches", "; ".join(steps))] if steps else []),
        ("monitoring", watched),
    ]


def patterns_line(modalities: Sequence[str]) -> str:
    names = [pattern_name(p, modalities) for p in all_patterns(modalities)]
    return f"{len(names)} on val and test: {', '.join(names)}"


def describe(title: str, rows: Sequence[tuple[str, str]]) -> str:
    return f"{HEADER}\n{title}\n{table(rows)}"


def sources_line(sources: Mapping[str, str], resolved: Mapping[str, str]) -> str:
    """``audio: scratch; image: models:/... -> run <id>``."""
    parts = []
    for m, source in sources.items():
        parts.append(f"{m}: {source}" + (f" -> run {resolved[m]}" if m in resolved else ""))
    return "; ".join(parts)


def _registers(cfg: DictConfig, names: Sequence[str]) -> str:
    if cfg.trainer.get("skip_train"):
        return "nothing (--skip-train: the encoders stay untrained)"
    return ", ".join(names) + " (a new version each; @champion moves if it validates best)"


def plan_pretrain(recipe: object) -> str:
    """A supervised (:class:`PretrainRecipe`) or contrastive pretraining."""
    from tsp_mlflow.recipes.contrastive import ContrastivePretrainRecipe
    from tsp_mlflow.tracking import schema

    cfg = recipe.cfg  # type: ignore[attr-defined]
    if isinstance(recipe, ContrastivePretrainRecipe):
        modalities = list(recipe.modalities)
        title = f"tsp pretrain: {', '.join(modalities)} encoders, contrastive, on {cfg.data.name}"
        names = [
            schema.registered_encoder_name(cfg.data.name, m, schema.OBJECTIVE_CONTRASTIVE)
            for m in modalities
        ]
        run_name = "pretrain-contrastive"
    else:
        modalities = [recipe.modality]  # type: ignore[attr-defined]
        title = (
            f"tsp pretrain: the {modalities[0]} encoder on {cfg.data.name}'s "
            f"{recipe.task.name} task"
        )  # type: ignore[attr-defined]
        names = [schema.registered_encoder_name(cfg.data.name, modalities[0])]
        run_name = f"pretrain-{modalities[0]}"
    return describe(
        title,
        [
            ("experiment", experiment_line(cfg.tracking.experiment)),
            ("run", run_name),
            ("data", data_line(cfg, modalities)),
            ("encoders", "; ".join(f"{m}: {cfg.model.encoders[m]._target_}" for m in modalities)),
            *training_lines(cfg),
            ("registers", _registers(cfg, names)),
        ],
    )


def plan_multimodal(recipe: object) -> str:
    from tsp_mlflow.recipes.multimodal import MultimodalRecipe

    assert isinstance(recipe, MultimodalRecipe)
    cfg = recipe.cfg
    resolved = {m: loc.run_id for m, loc in recipe.locations.items()}
    return describe(
        f"tsp multimodal: {recipe.fusion_name} fusion on {cfg.data.name}",
        [
            ("experiment", experiment_line(cfg.tracking.experiment)),
            ("run", f"{recipe.condition}-seed{cfg.seed} (condition {recipe.condition})"),
            ("data", data_line(cfg, recipe.modalities)),
            ("encoders", sources_line(recipe.sources, resolved)),
            ("modes", ", ".join(f"{m} {mode}" for m, mode in recipe.modes.items())),
            ("method", f"gradient {recipe.gradient.name}, imputation {recipe.imputation}"),
            *training_lines(cfg),
            ("patterns", patterns_line(recipe.modalities)),
        ],
    )


def plan_pipeline(recipe: object) -> str:
    from tsp_mlflow.recipes.pipeline import PipelineRecipe
    from tsp_mlflow.tracking import schema
    from tsp_mlflow.tracking.params import flatten
    from tsp_mlflow.tracking.reuse import find_identical_run

    assert isinstance(recipe, PipelineRecipe)
    cfg = recipe.cfg
    client = MlflowClient()
    chosen_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or cfg.tracking.experiment
    experiment = (
        client.get_experiment(chosen_id) if chosen_id else client.get_experiment_by_name(name)
    )
    pretrain = []
    for m, stage in recipe.pretrain.items():
        tags = stage.tags()
        found = experiment and find_identical_run(
            experiment_ids=[experiment.experiment_id],
            stage=schema.STAGE_PRETRAIN,
            config_hash=tags[schema.CONFIG_HASH],
            code_version=tags[schema.CODE_VERSION],
            params=flatten(stage.config),
        )
        pretrain.append(f"{m}: " + (f"reuse run {found.info.run_id}" if found else "train"))
    if recipe.contrastive is not None:
        pretrain.append("contrastive: train or reuse one run for the contrastive cells")
    design = recipe.design
    cells = recipe.cells if design is None else [c for c in recipe.cells if c.seed < design.min]
    labels = [c.label for c in cells]
    shown = ", ".join(labels[:6]) + (f", ... ({len(labels) - 6} more)" if len(labels) > 6 else "")
    if design is None:
        runs = f"{len(labels)} (grid x {recipe.seeds} seeds): {shown}"
    else:
        runs = (
            f"{len(labels)} to the first look (grid x {design.min} seeds), up to "
            f"{len(recipe.cells)} (grid x {design.max} seeds): {shown}"
        )
    first = next(iter(recipe.pretrain.values()))
    return describe(
        f"tsp pipeline on {recipe.dataset}",
        [
            ("experiment", experiment_line(cfg.tracking.experiment)),
            ("data", data_line(first.cfg, recipe.modalities)),
            ("pretrain", "; ".join(pretrain)),
            ("fusion runs", runs),
            *(
                [
                    (
                        "seeds",
                        f"auto: {design.describe()}; stop when every full-pattern row is "
                        f"decided, or for futility below {design.futility:g}",
                    )
                ]
                if design
                else []
            ),
            *training_lines(first.cfg),
            (
                "analysis",
                f"{recipe.analysis.a} vs {recipe.analysis.b} on {recipe.analysis.split}, "
                f"{recipe.analysis.correction} correction",
            ),
        ],
    )


def plan_sweep(recipe: object) -> str:
    from tsp_mlflow.recipes.sweep import SweepRecipe

    assert isinstance(recipe, SweepRecipe)
    dims = "; ".join(f"{key} = {text}" for key, text in recipe.space.expressions)
    return describe(
        f"tsp sweep: study {recipe.name} on {recipe.dataset}",
        [
            ("experiment", experiment_line(recipe.cfg.tracking.experiment)),
            ("storage", redact_uri(recipe.storage_url)),
            ("trials", f"{recipe.n_trials} per condition, each a {recipe.stage} run"),
            ("conditions", ", ".join(a.name for a in recipe.arms)),
            ("space", dims or "none"),
            ("objective", f"{recipe.direction} {recipe.task.monitor} on val"),
        ],
    )
