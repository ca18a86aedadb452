"""One pretraining per encoder, however many pipelines ask for it at once.

A pipeline that finds no FINISHED identical pretrain run trains one. Several pipelines
started together would each train it. The claim is the pretrain run itself: right after
creating its run (tagged with the config hash and code version), a process looks for
other live runs with the same key; the earliest (start time, then run id) wins, on any
store, local or a server. A loser withdraws its run (KILLED with ``tsp.stopped``, then
deleted) and waits for the winner, then reuses it; if the winner dies, the waiters claim
again.
"""

from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities import Run

from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.liveness import why_dead
from tsp_mlflow.tracking.reuse import find_identical_run

POLL_SECONDS = 2.0


class Superseded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """An earlier identical pretrain run holds the claim; this one withdraws."""

    def __init__(self, winner: str) -> None:
        super().__init__(f"an identical pretrain run started earlier: {winner}")
        self.winner = winner


def live_claim(
    experiment_id: str, stage: str, config_hash: str, code_version: str, *, mine: str | None = None
) -> Run | None:
    """The earliest live run (RUNNING, its process alive) with this key that started
    before ``mine`` (any, without ``mine``); None when no one is training it."""
    query = (
        f"tags.`{schema.STAGE}` = '{stage}' and tags.`{schema.CONFIG_HASH}` = '{config_hash}' "
        f"and tags.`{schema.CODE_VERSION}` = '{code_version}' and attributes.status = 'RUNNING'"
    )
    client = MlflowClient()
    found = [
        r
        for r in client.search_runs([experiment_id], query, max_results=100)
        if r.info.run_id != mine and why_dead(r) is None
    ]
    if mine is not None:
        me = (client.get_run(mine).info.start_time, mine)
        found = [r for r in found if (r.info.start_time, r.info.run_id) < me]
    return min(found, key=lambda r: (r.info.start_time, r.info.run_id), default=None)


def check_claim(run_id: str, params: dict[str, str]) -> None:
    """Raise :class:`Superseded` if an earlier identical run is training, or an identical
    one finished meanwhile (between this process's search and its run's creation)."""
    run = MlflowClient().get_run(run_id)
    tags = run.data.tags
    key = (tags[schema.STAGE], tags[schema.CONFIG_HASH], tags[schema.CODE_VERSION])
    winner = live_claim(run.info.experiment_id, *key, mine=run_id)
    if winner is None:
        winner = find_identical_run(
            experiment_ids=[run.info.experiment_id],
            stage=key[0],
            config_hash=key[1],
            code_version=key[2],
            params=params,
        )
    if winner is not None:
        raise Superseded(winner.info.run_id)


def wait_for(run_id: str) -> str:
    """Poll ``run_id`` until it ends or its process dies; its final status (a dead RUNNING
    run counts as KILLED)."""
    client = MlflowClient()
    while True:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            return run.info.status
        if why_dead(run) is not None:
            return "KILLED"
        time.sleep(POLL_SECONDS)
