"""``pretrain`` with ``objective=contrastive``: two or more encoders trained jointly on
paired samples with a symmetric InfoNCE loss, then registered one per modality.

The model is the usual :class:`~tsp_mlflow.models.late_fusion.LateFusionModel`, so the
same loop, checkpoints, resume and per-epoch logging apply: its "fusion" is the
per-modality projection into the shared space and its "head" is the contrastive
objective itself (it holds the learnable temperature and the optional queue, which are
therefore trained and checkpointed with the model).
"""

from __future__ import annotations

import time

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from tsp_mlflow.config import to_plain
from tsp_mlflow.data.batch import pattern_name
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.recipes.config_checks import check_training_config, config_errors
from tsp_mlflow.recipes.orchestrator import EpochHook, train_and_test, training_run
from tsp_mlflow.recipes.setup import (
    build_encoder,
    log_encoder_artifact,
    make_datasets,
    provenance_tags,
)
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import code_version, flatten
from tsp_mlflow.tracking.registry import register_encoder
from tsp_mlflow.tracking.resume import check_resumable
from tsp_mlflow.training.distributed import check_supported
from tsp_mlflow.training.runtime import resolve_device, seed_everything


def contrastive_modalities(cfg: DictConfig) -> tuple[str, ...]:
    """``objective.modalities`` (null: all of the dataset's), validated, in dataset order."""
    available = list(cfg.data.modalities)
    wanted = to_plain(cfg.objective.modalities) or available
    if isinstance(wanted, str):
        wanted = [m.strip() for m in wanted.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in available]
    if unknown or len(set(wanted)) < 2:
        raise UserInputError(
            f"objective.modalities={list(wanted)}: contrastive pretraining needs at least two "
            f"of {', '.join(available)} (dataset {cfg.data.name!r}); e.g. "
            f"objective.modalities=[{available[0]},{available[-1]}], or null for all"
        )
    return tuple(m for m in available if m in wanted)


class ContrastivePretrainRecipe:
    """Validate on construction (no run exists yet); ``run()`` trains, logs, registers."""

    def __init__(self, cfg: DictConfig) -> None:
        self.modalities = contrastive_modalities(cfg)
        check_supported(objective=schema.OBJECTIVE_CONTRASTIVE)
        check_training_config(cfg, encoder_modalities=self.modalities)
        with config_errors("objective"):  # the objective's own argument checks, up front
            self.objective_check = instantiate(cfg.objective.loss)(modalities=self.modalities)
        with open_dict(cfg):  # only what this run uses is logged
            cfg.model.encoders = {m: cfg.model.encoders[m] for m in self.modalities}
            cfg.objective.modalities = list(self.modalities)
            for key in ("missing", "representations", "modality", "task"):
                cfg.pop(key, None)  # paired, complete data; no probes, one modality or labels
            cfg.model.pop("head", None)  # the objective is the head
        self.cfg = cfg
        self.config = to_plain(cfg)

    @property
    def task_name(self) -> str:
        return str(self.objective_check.name)

    def tags(self) -> dict[str, str]:
        return {
            schema.STAGE: schema.STAGE_PRETRAIN,
            schema.OBJECTIVE: schema.OBJECTIVE_CONTRASTIVE,
            schema.DATASET: self.cfg.data.name,
            schema.MODALITIES: ",".join(self.modalities),
            schema.SEED: str(self.cfg.seed),
            schema.TASK: self.task_name,
            schema.HEADLINE_METRICS: ",".join(self.objective_check.headline_metrics),
            **provenance_tags(self.config),
        }

    def check_resume(self, run_id: str) -> None:
        """Refuse (clearly) a run that is not this recipe's interrupted pretrain run."""
        check_resumable(
            run_id,
            stage=schema.STAGE_PRETRAIN,
            params=flatten(self.config),
            tags={
                schema.CODE_VERSION: code_version(),
                schema.OBJECTIVE: schema.OBJECTIVE_CONTRASTIVE,
            },
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
    ) -> str:
        """Train, log every encoder under ``encoder/<modality>/`` and register each as
        ``<dataset>-<modality>-contrastive-encoder`` (the same arguments as
        :meth:`~tsp_mlflow.recipes.pretrain.PretrainRecipe.run`)."""
        cfg = self.cfg
        started = time.perf_counter()
        generator = seed_everything(cfg.seed)
        device = resolve_device(cfg.runtime.device)
        encoders = {m: build_encoder(cfg.model.encoders, m) for m in self.modalities}
        projection = instantiate(cfg.objective.projection)(
            in_dims={m: e.out_dim for m, e in encoders.items()}
        )
        objective = instantiate(cfg.objective.loss)(modalities=self.modalities)
        model = LateFusionModel(encoders, projection, objective)
        datasets = make_datasets(cfg.data, self.modalities, missing=None, seed=cfg.seed)
        if resume:
            self.check_resume(resume)
        tags = {} if resume else self.tags()
        with training_run(
            cfg,
            self.config,
            datasets,
            run_name="pretrain-contrastive",
            tags=tags,
            nested=nested,
            run_id=run_id,
            parent_run_id=parent_run_id,
            resume=resume,
            generator=generator,
            device=device,
        ) as (run_id, loaders):
            result = train_and_test(
                cfg,
                model,
                loaders,
                objective,
                device,
                started=started,
                on_epoch_end=on_epoch_end,
                resume_run_id=resume,
                patterns=[self.modalities],
            )
            if cfg.trainer.skip_train:  # untrained encoders: nothing to keep or register
                return run_id
            uris = {
                m: log_encoder_artifact(
                    encoders[m],
                    self.config["model"]["encoders"][m],
                    schema.encoder_artifact_path(m),
                )
                for m in self.modalities
            }
            if not register:
                return run_id
            monitor = schema.metric_key(
                "val", pattern_name(self.modalities, self.modalities), objective.monitor
            )
            # Last step, so that a run that fails anywhere above registers nothing.
            for m in self.modalities:
                name = schema.registered_encoder_name(
                    cfg.data.name, m, schema.OBJECTIVE_CONTRASTIVE
                )
                register_encoder(
                    name=name,
                    artifact_uri=uris[m],
                    run_id=run_id,
                    monitor=monitor,
                    value=result.best_value,
                    higher_is_better=objective.higher_is_better(objective.monitor),
                )
        return run_id
