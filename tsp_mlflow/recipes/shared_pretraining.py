"""Each modality's pretrained encoder, trained once however many consumers ask: an
identical FINISHED run is reused, one in progress elsewhere is waited for, else this
process claims and trains it. The pipeline and the sweep both start here."""

from __future__ import annotations

from collections.abc import Mapping

from tsp_mlflow.recipes.contrastive import ContrastivePretrainRecipe
from tsp_mlflow.recipes.pretrain import PretrainRecipe
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.claims import Superseded, live_claim, wait_for
from tsp_mlflow.tracking.params import flatten
from tsp_mlflow.tracking.reuse import find_identical_run


def pretrain_or_reuse(
    recipes: Mapping[str, PretrainRecipe | ContrastivePretrainRecipe],
    experiment_id: str,
    *,
    parent_run_id: str | None = None,
    interrupted: dict[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, bool]]:
    """Each modality's pretrain run: an identical FINISHED one if it exists, else trained
    now as a child of the active run (or of ``parent_run_id``), continuing an
    ``interrupted`` run of the same config hash in place. Returns run ids and whether
    each was reused."""
    runs, reused = {}, {}
    for m, recipe in recipes.items():
        tags = recipe.tags()
        key = (schema.STAGE_PRETRAIN, tags[schema.CONFIG_HASH], tags[schema.CODE_VERSION])
        while True:  # reuse a finished run, wait for one in progress, or claim and train
            existing = find_identical_run(
                experiment_ids=[experiment_id],
                stage=key[0],
                config_hash=key[1],
                code_version=key[2],
                params=flatten(recipe.config),
            )
            if existing is not None:
                runs[m], reused[m] = existing.info.run_id, True
                break
            busy = live_claim(experiment_id, *key)
            if busy is not None:
                print(
                    f"pretrain {m}: waiting for identical run {busy.info.run_id} (another "
                    "process is training it)",
                    flush=True,
                )
                wait_for(busy.info.run_id)
                continue
            resume = (interrupted or {}).get(tags[schema.CONFIG_HASH])
            try:
                claim = {"claim": True} if isinstance(recipe, PretrainRecipe) else {}
                runs[m] = recipe.run(
                    nested=parent_run_id is None,
                    parent_run_id=parent_run_id,
                    resume=resume,
                    **claim,
                )
            except Superseded as lost:
                print(f"pretrain {m}: run {lost.winner} started first; waiting for it", flush=True)
                wait_for(lost.winner)
                continue
            reused[m] = False
            break
        print(f"pretrain {m}: {'reused' if reused[m] else 'trained'} run {runs[m]}", flush=True)
    return runs, reused
