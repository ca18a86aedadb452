"""Find a FINISHED run that already computed exactly what we are about to compute."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import Run

from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.params import semantic_params


def find_identical_run(
    *,
    experiment_ids: list[str],
    stage: str,
    config_hash: str,
    code_version: str,
    params: dict[str, str],
) -> Run | None:
    """The newest FINISHED run with the same stage, config hash, code version and semantic params.

    The hash narrows the search on the server; params are then compared as strings so a
    hash collision or an older schema can never cause a false match. Extra params on the
    candidate (``mlflow run`` logs the raw entry-point parameters) are ignored. Pages are followed to
    the end, so any number of runs is searched.
    """
    client = MlflowClient()
    wanted = semantic_params(params)
    query = (
        f"tags.`{schema.STAGE}` = '{stage}' and tags.`{schema.CONFIG_HASH}` = '{config_hash}' "
        f"and tags.`{schema.CODE_VERSION}` = '{code_version}' and attributes.status = 'FINISHED'"
    )
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            query,
            max_results=500,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        for run in page:
            if all(run.data.params.get(k) == v for k, v in wanted.items()):
                return run
        token = page.token
        if not token:
            return None
