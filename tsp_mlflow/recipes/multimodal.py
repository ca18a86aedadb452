"""``multimodal``: train a late-fusion model; evaluate every modality pattern."""

from __future__ import annotations

import time
from collections.abc import Sequence

import mlflow
import torch
from hydra.utils import instantiate
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from tsp_mlflow.api import load_encoder_with_location
from tsp_mlflow.config import group_options, to_plain
from tsp_mlflow.data.missing import describe_rates
from tsp_mlflow.errors import EncoderWeightsMismatch, UserInputError
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.recipes.config_checks import check_training_config, config_errors
from tsp_mlflow.recipes.encoder_sources import SCRATCH, condition_name, parse_encoder_sources
from tsp_mlflow.recipes.orchestrator import EpochHook, train_and_test, training_run
from tsp_mlflow.recipes.setup import (
    build_encoder,
    build_task,
    make_datasets,
    provenance_tags,
    split_missing_rates,
    task_tags,
)
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import code_version, flatten
from tsp_mlflow.tracking.resolve import EncoderLocation, resolve_encoder
from tsp_mlflow.tracking.resume import check_resumable
from tsp_mlflow.training.distributed import (
    check_supported,
    current,
    init_distributed,
)
from tsp_mlflow.training.finetune import apply_modes, check_learning_rates, encoder_modes
from tsp_mlflow.training.gradients import GradientStrategy
from tsp_mlflow.training.representations import log_representations
from tsp_mlflow.training.runtime import resolve_device, seed_everything


def encoders_of_run(run_id: str, given: str) -> str | None:
    """The ``encoders`` value that names the exact encoder runs a fusion run used
    (``audio=run:<id>,image=scratch``): a resume loads those, wherever ``@champion`` is
    now. ``given`` must be what the run was started with. None when ``run_id`` is not a
    fusion run (the resume check then says so)."""
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        return None
    tags, started_with = run.data.tags, run.data.params.get("encoders")
    if started_with is not None and started_with != given:
        raise UserInputError(
            f"resume={run_id!r} was started with other settings (encoders: run has "
            f"{started_with!r}, now {given!r}); rerun the command that started it, adding "
            "only --resume"
        )
    modalities = [m for m in tags.get(schema.MODALITIES, "").split(",") if m]
    if tags.get(schema.STAGE) != schema.STAGE_MULTIMODAL or not modalities:
        return None
    return ",".join(
        f"{m}=run:{tags[schema.encoder_run_tag(m)]}"
        if schema.encoder_run_tag(m) in tags
        else f"{m}={SCRATCH}"
        for m in modalities
    )


def check_encoder_run(location: EncoderLocation, *, modality: str, dataset: str, task: str) -> str:
    """An encoder must come from a pretrain run of the same modality, dataset and task:
    task-specific pretraining on another task (MOSI 3-class vs regression) is another
    experiment, and ``pretrained`` must never pick one up silently. A contrastive run used
    no labels, so any task may use it; it must hold ``modality``. Returns the run's
    objective (supervised | contrastive)."""
    tags = MlflowClient().get_run(location.run_id).data.tags
    objective = tags.get(schema.OBJECTIVE, schema.OBJECTIVE_SUPERVISED)
    wanted = [(schema.MODALITY, modality), (schema.DATASET, dataset), (schema.TASK, task)]
    if objective == schema.OBJECTIVE_CONTRASTIVE:
        held = tags.get(schema.MODALITIES, "").split(",")
        if modality not in held:
            raise UserInputError(
                f"encoders: {location.uri} (run {location.run_id}) was pretrained "
                f"contrastively on {', '.join(held)}, not {modality}; pretrain one with "
                f"tsp pretrain --objective contrastive --dataset {dataset}"
            )
        wanted = [(schema.DATASET, dataset)]
    for tag, want in wanted:
        have = tags.get(tag)
        if have is not None and have != want:
            raise UserInputError(
                f"encoders: {location.uri} (run {location.run_id}) was pretrained with "
                f"{tag}={have}, but this run needs {modality} on {dataset} for task {task}; "
                f"pretrain one (tsp pretrain --dataset {dataset} --modality {modality}, with the "
                f"same task) and pass it as run:<id> or models:/<name>/<version>"
            )
    return objective


def build_gradient(gradient: DictConfig) -> GradientStrategy:
    """The ``gradient`` option (joint | uniform | mmpareto), its arguments checked."""
    with config_errors("gradient"):
        strategy = instantiate(gradient)
    if not isinstance(strategy, GradientStrategy):
        raise UserInputError(
            f"gradient: {gradient._target_} is not a gradient strategy; choose "
            f"{', '.join(group_options('gradient'))}"
        )
    return strategy


def check_imputation(node: DictConfig, modalities: Sequence[str]) -> str:
    """The ``imputation`` option's name; its predictor is built on a stand-in here, so a
    bad argument fails before any run exists."""
    if node.predictor is not None:
        if len(modalities) < 2:
            raise UserInputError("imputation=predicted needs at least two modalities")
        with config_errors("imputation"):
            instantiate(node.predictor)(in_dims=dict.fromkeys(modalities, 2))
    return str(node.name)


class MultimodalRecipe:
    """Validate and resolve every encoder source up front, then ``run()``."""

    def __init__(self, cfg: DictConfig, fusion_name: str, condition: str | None = None) -> None:
        self.modalities: tuple[str, ...] = tuple(cfg.data.modalities)
        self.sources = parse_encoder_sources(cfg.encoders, self.modalities, cfg.data.name)
        scratch = [m for m, src in self.sources.items() if src == SCRATCH]
        check_training_config(cfg, encoder_modalities=scratch)
        self.task = build_task(cfg.task, cfg.data)
        self.missing = split_missing_rates(cfg.get("missing"), self.modalities)
        self.modes = encoder_modes(
            cfg.finetune.mode, to_plain(cfg.finetune.modes) or {}, self.modalities
        )
        check_learning_rates(to_plain(cfg.finetune.lr) or {}, self.modalities)
        self.gradient = build_gradient(cfg.gradient)
        self.imputation = check_imputation(cfg.imputation, self.modalities)
        check_supported(gradient=self.gradient.name, imputation=self.imputation)
        # Resolving checks that every named run / model exists before any run is created.
        self.locations: dict[str, EncoderLocation] = {
            m: resolve_encoder(src, modality=m) for m, src in self.sources.items() if src != SCRATCH
        }
        objectives = {
            m: check_encoder_run(location, modality=m, dataset=cfg.data.name, task=self.task.name)
            for m, location in self.locations.items()
        }
        # Loading up front checks the architecture and weights before any run exists.
        self.pretrained = {m: self._load(cfg, m, loc) for m, loc in self.locations.items()}
        self.cfg = cfg
        self.fusion_name = fusion_name
        contrastive = [m for m, o in objectives.items() if o == schema.OBJECTIVE_CONTRASTIVE]
        self.condition = condition or condition_name(self.sources, contrastive)

    @staticmethod
    def _load(cfg: DictConfig, modality: str, location: EncoderLocation) -> torch.nn.Module:
        try:
            return load_encoder_with_location(
                location, expected=to_plain(cfg.model.encoders[modality])
            )[0]
        except EncoderWeightsMismatch as err:
            raise EncoderWeightsMismatch(
                f"encoders: {modality} from {location.uri} (run {location.run_id}): {err}"
            ) from None

    def tags(self) -> dict[str, str]:
        tags = {
            schema.STAGE: schema.STAGE_MULTIMODAL,
            schema.DATASET: self.cfg.data.name,
            schema.MODALITIES: ",".join(self.modalities),
            schema.CONDITION: self.condition,
            schema.SEED: str(self.cfg.seed),
            schema.FUSION: self.fusion_name,
            schema.GRADIENT: self.gradient.name,
            schema.IMPUTATION: self.imputation,
            **task_tags(self.task),
            **{schema.missing_tag(s): describe_rates(r) for s, r in self.missing.items()},
            **{schema.finetune_tag(m): mode for m, mode in self.modes.items()},
        }
        for m, source in self.sources.items():
            tags[schema.encoder_source_tag(m)] = source
            if m in self.locations:
                tags[schema.encoder_run_tag(m)] = self.locations[m].run_id
        return tags

    def check_resume(self, run_id: str) -> None:
        """Refuse (clearly) a run that is not this recipe's interrupted fusion run: other
        settings, or other encoder runs (``pretrained`` may point at a newer champion)."""
        # `encoders` may say `pretrained` while the champion moved on: the encoder runs
        # themselves must match (encoders_of_run gives them back for a resume).
        params = {k: v for k, v in flatten(to_plain(self.cfg)).items() if k != "encoders"}
        check_resumable(
            run_id,
            stage=schema.STAGE_MULTIMODAL,
            params=params,
            tags={
                **{schema.encoder_run_tag(m): loc.run_id for m, loc in self.locations.items()},
                schema.CODE_VERSION: code_version(),
            },
        )

    def run(
        self,
        nested: bool = False,
        *,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        on_epoch_end: EpochHook | None = None,
        tags: dict[str, str] | None = None,
        resume: str | None = None,
    ) -> str:
        """Train and log. ``run_id`` fills a run created beforehand (a sweep's trial);
        ``parent_run_id`` nests under a parent this process does not hold open (a Hydra
        multirun's); ``tags`` are added to the run's own; ``resume`` continues that
        (interrupted) run from its last checkpoint."""
        cfg = self.cfg
        started = time.perf_counter()
        generator = seed_everything(cfg.seed)
        device = init_distributed(resolve_device(cfg.runtime.device))  # torchrun: its device
        encoders = {
            m: self.pretrained[m] if m in self.pretrained else build_encoder(cfg.model.encoders, m)
            for m in self.modalities
        }
        config = to_plain(cfg)
        fusion = instantiate(cfg.model.fusion)(in_dims={m: e.out_dim for m, e in encoders.items()})
        head = instantiate(cfg.model.head)(
            in_features=fusion.out_dim, out_features=self.task.num_outputs
        )
        in_dims = {m: e.out_dim for m, e in encoders.items()}
        unimodal_heads = (
            {
                m: instantiate(cfg.model.unimodal_head)(
                    in_features=d, out_features=self.task.num_outputs
                )
                for m, d in in_dims.items()
            }
            if self.gradient.unimodal
            else None
        )
        predictor = (
            instantiate(cfg.imputation.predictor)(in_dims=in_dims)
            if cfg.imputation.predictor is not None
            else None
        )
        model = LateFusionModel(
            encoders, fusion, head, unimodal_heads=unimodal_heads, predictor=predictor
        )
        apply_modes(model, self.modes)

        datasets = make_datasets(  # a malformed file creates no run
            cfg.data, self.modalities, missing=cfg.get("missing"), seed=cfg.seed
        )
        # Checked last, so that no other resume can slip in between; under torchrun by
        # rank 0 alone (the run it claims is then RUNNING for the others).
        if resume and current().is_main:
            self.check_resume(resume)
        name = f"{self.condition}-seed{cfg.seed}"
        tags = {**self.tags(), **provenance_tags(config), **(tags or {})}
        if resume:  # keep the run's own tags (its encoder sources as first given)
            tags = {}
        with training_run(
            cfg,
            config,
            datasets,
            run_name=name,
            tags=tags,
            nested=nested,
            run_id=run_id,
            parent_run_id=parent_run_id,
            resume=resume,
            generator=generator,
            device=device,
        ) as (run_id, loaders):
            train_and_test(
                cfg,
                model,
                loaders,
                self.task,
                device,
                started=started,
                on_epoch_end=on_epoch_end,
                resume_run_id=resume,
                gradient=self.gradient,
            )
            if not current().is_main:  # under torchrun rank 0 alone logs
                return run_id
            logged = set(mlflow.get_run(run_id).data.metrics) if resume else set()
            if cfg.representations and not any(k.startswith("probe/") for k in logged):
                log_representations(model, loaders, device, self.task)
        return run_id
