"""The ``multimodal`` entry point as a Hydra application, for Hydra's own sweeps.

    python -m tsp_mlflow.multirun -m model/fusion=concat,sum,gated seed=0,1,2
    python -m tsp_mlflow.multirun -m experiment=missing_20,missing_90 encoders=scratch,pretrained

Each job of the sweep is its own MLflow run, tagged exactly like ``tsp multimodal`` (stage,
fusion, condition, seed, missing rates, encoder lineage) plus its job number and overrides,
and nested under one parent run per multirun (``tsp.stage=multirun``), so the MLflow UI
shows the sweep as one tree and ``tsp analyze --parent-run <parent id>`` analyses exactly
its jobs. Any Hydra launcher works (joblib for local parallel jobs, submitit for SLURM):
the parent's id reaches the jobs through the environment. Hydra writes its own logs under
``multirun/`` (``hydra.sweep.dir=...`` moves them).
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tsp_mlflow.config import check_missing, check_targets, config_dir
from tsp_mlflow.errors import UserInputError

PARENT_ENV = "TSP_MULTIRUN_PARENT_RUN_ID"  # set for the jobs by the multirun's callback


class MultirunParent(Callback):
    """Open one MLflow parent run when a multirun starts; close it when it ends.

    The parent ends FINISHED when every job's run finished, FAILED otherwise (a job that
    raised stops Hydra's sweep before ``on_multirun_end``: an exit hook closes it then).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        from tsp_mlflow.tracking import schema
        from tsp_mlflow.tracking.params import redact_overrides
        from tsp_mlflow.tracking.session import configure_tracking, use_experiment

        configure_tracking()
        use_experiment(config.tracking.experiment)
        hydra_cfg = config.hydra  # HydraConfig is set per job, not yet here
        tags = {
            schema.STAGE: schema.STAGE_MULTIRUN,
            schema.DATASET: str(config.data.name),
            schema.MULTIRUN_OVERRIDES: " ".join(redact_overrides(list(hydra_cfg.overrides.task))),
        }
        run = MlflowClient().create_run(
            os.environ["MLFLOW_EXPERIMENT_ID"],  # exported by use_experiment
            run_name=f"multirun-{Path(hydra_cfg.sweep.dir).name}",
            tags=tags,
        )
        self.run_id = run.info.run_id
        os.environ[PARENT_ENV] = self.run_id
        atexit.register(self._close, "FAILED")
        print(f"multirun parent run {self.run_id}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close(None)

    def _close(self, status: str | None) -> None:
        from mlflow import MlflowClient

        from tsp_mlflow.tracking import schema

        client = MlflowClient()
        parent = client.get_run(self.run_id).info
        if parent.status != "RUNNING":
            return
        children = client.search_runs(
            [parent.experiment_id],
            f"tags.`{schema.PARENT_RUN_ID}` = '{self.run_id}'",
        )
        failed = [r.info.run_id for r in children if r.info.status != "FINISHED"]
        if status is None:
            status = "FAILED" if failed else "FINISHED"
        if status == "FAILED":
            reason = f"job runs not finished: {', '.join(failed)}" if failed else "a job failed"
            client.set_tag(self.run_id, schema.ERROR, reason)
        client.set_terminated(self.run_id, status)


@hydra.main(config_path=str(config_dir()), config_name="multirun", version_base="1.3")
def run_job(cfg: DictConfig) -> str:
    """One job: validate, then train and log one fusion run; returns its run id."""
    from tsp_mlflow.recipes.multimodal import MultimodalRecipe
    from tsp_mlflow.tracking.session import configure_tracking, use_experiment

    try:
        OmegaConf.resolve(cfg)
        check_missing(cfg)
        check_targets(cfg)
        configure_tracking()  # encoder URIs are resolved against the tracking server
        hydra_cfg = HydraConfig.get()
        fusion = hydra_cfg.runtime.choices["model/fusion"]
        recipe = MultimodalRecipe(cfg, fusion_name=str(fusion))
        use_experiment(cfg.tracking.experiment)
        parent = os.environ.get(PARENT_ENV) if hydra_cfg.mode.name == "MULTIRUN" else None
        tags = {}
        if parent:
            from tsp_mlflow.tracking import schema
            from tsp_mlflow.tracking.params import redact_overrides

            tags = {
                schema.MULTIRUN_JOB: str(hydra_cfg.job.num),
                schema.MULTIRUN_OVERRIDES: " ".join(
                    redact_overrides(list(hydra_cfg.overrides.task))
                ),
            }
        run_id = recipe.run(parent_run_id=parent, tags=tags)
    except UserInputError as err:  # one clear line, as the other entry points print;
        print(f"tsp: error: {err}", file=sys.stderr)  # SystemExit passes Hydra's handler
        sys.exit(2)
    print(
        f"multimodal run {run_id} finished (fusion {fusion}, condition {recipe.condition}, "
        f"seed {cfg.seed})",
        flush=True,
    )
    return run_id


def main() -> None:
    from tsp_mlflow.training.distributed import launched

    if launched().enabled:  # each rank would open its own multirun parent
        print(
            "tsp: error: tsp_mlflow.multirun runs in one process; torchrun launches "
            "tsp_mlflow pretrain and multimodal (python -m tsp_mlflow ...)",
            file=sys.stderr,
        )
        sys.exit(2)
    run_job()


if __name__ == "__main__":
    main()
