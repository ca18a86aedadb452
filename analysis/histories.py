"""Metric histories of many runs, fetched in bulk (100 runs per request) where the store
allows it, and in parallel with bounded concurrency otherwise."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

BULK_RUNS = 100  # run ids per bulk-history request (the server's limit)
BULK_MAX_RESULTS = 25_000  # points per bulk-history request (the server's limit)
MAX_WORKERS = 8  # concurrent requests: enough to hide latency, gentle on a shared server
# The MLflow UI's own bulk endpoint: one request returns one key for up to 100 runs.
BULK_HISTORY_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"

HISTORY_COLUMNS = ["run_id", "key", "step", "value", "timestamp"]


def fetch_histories(
    client: MlflowClient,
    run_ids: Sequence[str],
    keys: Sequence[str],
    *,
    max_workers: int = MAX_WORKERS,
) -> pd.DataFrame:
    """Every logged point of ``keys`` for ``run_ids``: run_id, key, step, value, timestamp.

    Against a server this asks the bulk endpoint the MLflow UI uses (100 runs and one key
    per request), ``max_workers`` requests at a time. Against a database store it asks the
    store's bulk query. Anything else, or a server without the endpoint, falls back to one
    ``get_metric_history`` per run and key, still ``max_workers`` at a time.
    """
    run_ids = list(dict.fromkeys(run_ids))
    tasks = [
        (key, run_ids[i : i + BULK_RUNS]) for key in keys for i in range(0, len(run_ids), BULK_RUNS)
    ]
    fetch = _bulk_fetcher(client)
    points: list[dict[str, object]] = []
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        try:
            for chunk in pool.map(lambda task: fetch(*task), tasks):
                points.extend(chunk)
        except _BulkUnavailable as why:
            log.info("bulk metric history unavailable (%s); fetching per run", why)
            points = []
            per_run = [(key, [run_id]) for key in keys for run_id in run_ids]
            for chunk in pool.map(lambda task: _per_run(client, *task), per_run):
                points.extend(chunk)
    frame = pd.DataFrame(points, columns=HISTORY_COLUMNS)
    return frame.sort_values(["run_id", "key", "step", "timestamp"], ignore_index=True)


class _BulkUnavailable(Exception):
    pass


def _bulk_fetcher(client: MlflowClient):  # noqa: ANN202 - a closure over the store kind
    # MlflowClient exposes no bulk-history call; its store is the documented-in-source way
    # to reach one. Any surprise there means "no bulk path", never a wrong answer.
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if hasattr(store, "get_host_creds"):
        return lambda key, ids: _rest_bulk(client, store, key, ids)
    if hasattr(store, "get_metric_history_bulk"):
        return lambda key, ids: _store_bulk(client, store, key, ids)

    def unavailable(key: str, ids: list[str]) -> list[dict[str, object]]:
        raise _BulkUnavailable(f"{type(store).__name__} has no bulk history")

    return unavailable


def _rest_bulk(client: MlflowClient, store, key: str, ids: list[str]) -> list[dict[str, object]]:  # noqa: ANN001
    from mlflow.utils.rest_utils import http_request

    response = http_request(
        store.get_host_creds(),
        BULK_HISTORY_ENDPOINT,
        "GET",
        params={"run_id": ids, "metric_key": key, "max_results": BULK_MAX_RESULTS},
        raise_on_status=False,
    )
    if response.status_code == 404:
        raise _BulkUnavailable(f"{BULK_HISTORY_ENDPOINT} returned 404")
    if response.status_code != 200:
        raise MlflowException(
            f"fetching metric history {key!r} failed: HTTP {response.status_code} {response.text[:300]}"
        )
    metrics = response.json().get("metrics", [])
    if len(metrics) >= BULK_MAX_RESULTS:  # truncated: halve the batch
        return _split(client, store, key, ids, _rest_bulk)
    return [
        {
            "run_id": m["run_id"],
            "key": key,
            "step": int(m.get("step", 0)),
            "value": float(m["value"]),
            "timestamp": int(m.get("timestamp", 0)),
        }
        for m in metrics
    ]


def _store_bulk(client: MlflowClient, store, key: str, ids: list[str]) -> list[dict[str, object]]:  # noqa: ANN001
    found = store.get_metric_history_bulk(run_ids=ids, metric_key=key, max_results=BULK_MAX_RESULTS)
    if len(found) >= BULK_MAX_RESULTS:
        return _split(client, store, key, ids, _store_bulk)
    return [_point(m.run_id, m) for m in found]  # MetricWithRunId is a Metric


def _split(client, store, key, ids, fetch):  # noqa: ANN001, ANN202
    if len(ids) == 1:  # one run with more points than a bulk page: the paged call
        return _per_run(client, key, ids)
    half = len(ids) // 2
    return fetch(client, store, key, ids[:half]) + fetch(client, store, key, ids[half:])


def _per_run(client: MlflowClient, key: str, ids: list[str]) -> list[dict[str, object]]:
    return [_point(run_id, m) for run_id in ids for m in client.get_metric_history(run_id, key)]


def _point(run_id: str, metric: Metric) -> dict[str, object]:
    return {
        "run_id": run_id,
        "key": metric.key,
        "step": int(metric.step),
        "value": float(metric.value),
        "timestamp": int(metric.timestamp),
    }
