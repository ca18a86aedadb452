"""The ``multimodal`` entry point as a Hydra application, for Hydra's own sweeps.

    python -m tsp_mlflow.multirun -m model/fusion=concat,sum,gated seed=0,1,2
    python -m tsp_mlflow.multirun -m experiment=missing_20,missing_90 encoders=scratch,pretrained

Each job of the sweep is its own MLflow run, tagged exactly like ``tsp multimodal`` (stage,
fusion, condition, seed, missing rates, encoder lineage), so the analysis reads a multirun
grid the same way as a pipeline grid (``tsp analyze --experiment <dataset>``). Any Hydra
launcher works (joblib for local parallel jobs, submitit for SLURM). Hydra writes its own
logs under ``multirun/`` (``hydra.sweep.dir=...`` moves them).
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tsp_mlflow.config import check_missing, check_targets, config_dir
from tsp_mlflow.errors import UserInputError


@hydra.main(config_path=str(config_dir()), config_name="multimodal", version_base="1.3")
def run_job(cfg: DictConfig) -> str:
    """One job: validate, then train and log one fusion run; returns its run id."""
    from tsp_mlflow.recipes.multimodal import MultimodalRecipe
    from tsp_mlflow.tracking.session import configure_tracking, use_experiment

    try:
        OmegaConf.resolve(cfg)
        check_missing(cfg)
        check_targets(cfg)
        configure_tracking()  # encoder URIs are resolved against the tracking server
        fusion = HydraConfig.get().runtime.choices["model/fusion"]
        recipe = MultimodalRecipe(cfg, fusion_name=str(fusion))
        use_experiment(cfg.tracking.experiment)
        run_id = recipe.run()
    except UserInputError as err:  # one clear line, as the other entry points print;
        print(f"tsp: error: {err}", file=sys.stderr)  # SystemExit passes Hydra's handler
        sys.exit(2)
    print(f"multimodal run {run_id} finished (fusion {fusion}, condition {recipe.condition}, "
          f"seed {cfg.seed})", flush=True)  # fmt: skip
    return run_id


def main() -> None:
    run_job()


if __name__ == "__main__":
    main()
