"""``pretrain``: train one modality's encoder with a linear head on that modality's labels."""

from __future__ import annotations

import time

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from tsp_mlflow.config import to_plain
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.fusion import ConcatFusion
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.recipes.config_checks import check_training_config
from tsp_mlflow.recipes.contrastive import ContrastivePretrainRecipe
from tsp_mlflow.recipes.orchestrator import EpochHook, train_and_test, training_run
from tsp_mlflow.recipes.setup import (
    build_encoder,
    build_task,
    log_encoder_artifact,
    make_datasets,
    provenance_tags,
    task_tags,
)
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.claims import check_claim
from tsp_mlflow.tracking.params import code_version, flatten
from tsp_mlflow.tracking.registry import register_encoder
from tsp_mlflow.tracking.resume import check_resumable
from tsp_mlflow.training.distributed import current, init_distributed
from tsp_mlflow.training.runtime import resolve_device, seed_everything


def make_pretrain_recipe(cfg: DictConfig) -> PretrainRecipe | ContrastivePretrainRecipe:
    """The recipe of ``cfg.objective``: supervised (one modality) or contrastive."""
    if cfg.objective.name == schema.OBJECTIVE_CONTRASTIVE:
        return ContrastivePretrainRecipe(cfg)
    return PretrainRecipe(cfg)


class PretrainRecipe:
    """Validate on construction (no run exists yet), then ``run()`` trains, logs, registers."""

    def __init__(self, cfg: DictConfig) -> None:
        if cfg.objective.name != schema.OBJECTIVE_SUPERVISED:
            raise UserInputError(
                f"objective={cfg.objective.name}: this recipe pretrains one modality on its "
                "labels (objective=supervised); use make_pretrain_recipe for the others"
            )
        modalities = list(cfg.data.modalities)
        if cfg.modality not in modalities:
            raise UserInputError(
                f"unknown modality {cfg.modality!r} for dataset {cfg.data.name!r}; "
                f"choose one of {', '.join(modalities)} (-P modality=...)"
            )
        check_training_config(cfg, encoder_modalities=[cfg.modality])
        self.task = build_task(cfg.task, cfg.data)
        with open_dict(cfg):  # only the pretrained modality's encoder belongs to this run
            cfg.model.encoders = {cfg.modality: cfg.model.encoders[cfg.modality]}
            cfg.pop("missing", None)  # unimodal pretraining sees complete data
            cfg.pop("representations", None)  # probes belong to fusion runs
        self.cfg = cfg
        self.config = to_plain(cfg)
        self.modality: str = cfg.modality

    def tags(self) -> dict[str, str]:
        return {
            schema.STAGE: schema.STAGE_PRETRAIN,
            schema.DATASET: self.cfg.data.name,
            schema.MODALITY: self.modality,
            schema.OBJECTIVE: schema.OBJECTIVE_SUPERVISED,
            schema.SEED: str(self.cfg.seed),
            **task_tags(self.task),
            **provenance_tags(self.config),
        }

    def check_resume(self, run_id: str) -> None:
        """Refuse (clearly) a run that is not this recipe's interrupted pretrain run."""
        check_resumable(
            run_id,
            stage=schema.STAGE_PRETRAIN,
            params=flatten(self.config),
            tags={schema.CODE_VERSION: code_version()},
        )

    def run(
        self,
        nested: bool = False,
        *,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        on_epoch_end: EpochHook | None = None,
        register: bool = True,
        resume: str | None = None,
        claim: bool = False,
    ) -> str:
        """Train, log and register. ``run_id`` fills a run created beforehand (a sweep's
        trial, which registers nothing: ``register=False``); ``parent_run_id`` nests the
        run under a parent this process does not hold open; ``resume`` continues that
        (interrupted) run from its last checkpoint. With ``claim``, a run that finds an
        earlier identical one in progress withdraws (:class:`Superseded`) before training."""
        cfg, m = self.cfg, self.modality
        started = time.perf_counter()
        generator = seed_everything(cfg.seed)
        device = init_distributed(resolve_device(cfg.runtime.device))  # torchrun: its device
        # Built before the run, so a bad encoder argument (a hub id) or a malformed data
        # file creates no run.
        encoder = build_encoder(cfg.model.encoders, m)
        head = instantiate(cfg.model.head)(
            in_features=encoder.out_dim, out_features=self.task.num_outputs
        )
        model = LateFusionModel({m: encoder}, ConcatFusion({m: encoder.out_dim}), head)
        datasets = make_datasets(cfg.data, [m], missing=None, seed=cfg.seed)
        # Checked last, so that no other resume can slip in between; under torchrun by
        # rank 0 alone (the run it claims is then RUNNING for the others).
        if resume and current().is_main:
            self.check_resume(resume)
        tags = {} if resume else self.tags()  # a resumed run keeps its own
        with training_run(
            cfg,
            self.config,
            datasets,
            run_name=f"pretrain-{m}",
            tags=tags,
            nested=nested,
            run_id=run_id,
            parent_run_id=parent_run_id,
            resume=resume,
            generator=generator,
            device=device,
        ) as (run_id, loaders):
            if claim and not resume:
                check_claim(run_id, flatten(self.config))
            result = train_and_test(
                cfg,
                model,
                loaders,
                self.task,
                device,
                started=started,
                on_epoch_end=on_epoch_end,
                resume_run_id=resume,
            )
            if not current().is_main:  # under torchrun rank 0 alone logs and registers
                return run_id
            if cfg.trainer.skip_train:  # an untrained encoder: nothing to keep or register
                return run_id
            artifact_uri = log_encoder_artifact(encoder, self.config["model"]["encoders"][m])
            name = schema.registered_encoder_name(cfg.data.name, m)
            if not register:
                return run_id
            # Last step, so that a run that fails anywhere above registers nothing. A
            # resumed run completes (or confirms) what an earlier process registered.
            register_encoder(
                name=name,
                artifact_uri=artifact_uri,
                run_id=run_id,
                monitor=schema.metric_key("val", m, self.task.monitor),
                value=result.best_value,
                higher_is_better=self.task.higher_is_better(self.task.monitor),
            )
        return run_id
