"""``sweep``: an Optuna study over a Hydra search space; every trial a nested MLflow run.

One sweep is one MLflow parent run. It holds one Optuna study per condition (``scratch``,
``pretrained``, ...; the same search space for each), named ``<study>/<condition>``, in an
RDB storage that several worker processes or machines share. A worker that starts a new
sweep creates the parent; a worker given the same study name and storage joins it (or
resumes it, when no other worker is running), so every trial of a study lands under the
same parent whichever machine ran it.
"""

from tsp_mlflow.recipes.sweep.recipe import (
    STAGES,
    Arm,
    SweepRecipe,
    SweepResult,
    split_sweep_overrides,
)
from tsp_mlflow.recipes.sweep.study import RUN_ATTR, STORAGE_ENV, SURPLUS_ATTR
from tsp_mlflow.recipes.sweep.trial import PruningReport, TrialFailed

__all__ = [
    "RUN_ATTR",
    "STAGES",
    "STORAGE_ENV",
    "SURPLUS_ATTR",
    "Arm",
    "PruningReport",
    "SweepRecipe",
    "SweepResult",
    "TrialFailed",
    "split_sweep_overrides",
]
