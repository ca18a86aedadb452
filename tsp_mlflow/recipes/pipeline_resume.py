"""What a stopped pipeline already did, read back from its runs, so that a resume continues
it exactly: the cells that finished or were interrupted, the pretrain runs it recorded,
and the looks it analysed."""

from __future__ import annotations

import pandas as pd
from mlflow import MlflowClient

from analysis.stats import full_pattern
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.resume import children

CellKey = tuple[str, str, str, int, str, str]


def cell_runs(parent_id: str) -> tuple[dict[CellKey, str], dict[CellKey, str]]:
    """A pipeline's fusion children by cell key (fusion, condition, missing, seed, gradient,
    imputation): the FINISHED ones, and the interrupted (KILLED) ones a resume continues in
    place. A FAILED cell is neither: it failed for a reason, so it runs again as a new run."""
    finished: dict[CellKey, str] = {}
    interrupted: dict[CellKey, str] = {}
    for run in children(parent_id, schema.STAGE_MULTIMODAL):
        tags = run.data.tags
        key = (
            tags.get(schema.FUSION, ""),
            tags.get(schema.CONDITION, ""),
            tags.get(schema.missing_tag("train"), "0"),
            int(tags.get(schema.SEED, -1)),
            tags.get(schema.GRADIENT, schema.GRADIENT_JOINT),
            tags.get(schema.IMPUTATION, schema.IMPUTATION_NONE),
        )
        if run.info.status == "FINISHED":
            finished[key] = run.info.run_id
        elif run.info.status == "KILLED":
            interrupted[key] = run.info.run_id  # oldest first: the newest wins
    return finished, {k: r for k, r in interrupted.items() if k not in finished}


def recorded_pretrain_runs(parent_id: str) -> tuple[dict[str, str], dict[str, bool]]:
    """The FINISHED pretrain runs a pipeline recorded before it stopped, and whether each
    was reused: a resume keeps them, even if an identical run has appeared since."""
    client = MlflowClient()
    tags = client.get_run(parent_id).data.tags
    runs, reused = {}, {}
    for m in tags.get(schema.MODALITIES, "").split(","):
        run_id = tags.get(schema.pipeline_pretrain_tag(m))
        if run_id and client.get_run(run_id).info.status == "FINISHED":
            runs[m] = run_id
            reused[m] = tags.get(schema.pipeline_reused_tag(m)) == "true"
            print(f"pretrain {m}: recorded by this pipeline, run {run_id}", flush=True)
    return runs, reused


def interrupted_pretrain_runs(parent_id: str) -> dict[str, str]:
    """A pipeline's KILLED pretrain children by config hash: resumed, not trained anew."""
    return {
        run.data.tags.get(schema.CONFIG_HASH, ""): run.info.run_id
        for run in children(parent_id, schema.STAGE_PRETRAIN)
        if run.info.status == "KILLED"
    }


def logged_looks(parent_id: str) -> dict[int, tuple[pd.DataFrame, str]]:
    """The looks a pipeline has analysed already (FINISHED analysis children with a
    ``tsp.analysis.look`` tag): look -> (its comparison table, its full pattern), read
    from the CSV it logged, so a resume decides exactly as that look did."""
    found: dict[int, tuple[pd.DataFrame, str]] = {}
    client = MlflowClient()
    for run in children(parent_id, schema.STAGE_ANALYSIS):
        look = run.data.tags.get(schema.ANALYSIS_LOOK)
        if run.info.status != "FINISHED" or not (look or "").isdigit():
            continue
        path = client.download_artifacts(run.info.run_id, schema.ANALYSIS_COMPARISON_CSV)
        comparison = pd.read_csv(path, keep_default_na=True, dtype={"missing": str})
        comparison.attrs["run_id"] = run.info.run_id
        patterns = [str(p) for p in comparison["pattern"].unique()]
        found[int(look)] = (comparison, full_pattern(patterns))
    return found
