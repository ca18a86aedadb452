"""Which runs may be resumed, checked before anything is written to them."""

from __future__ import annotations

import contextlib
import re
import time

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from tsp_mlflow.errors import ResumeTaken, UserInputError
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.liveness import STALE_AFTER_SECONDS, mark_killed, this_process, why_dead
from tsp_mlflow.tracking.params import semantic_params

RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow's stores generate (uuid4 hex)


def clear_stop_reason(run_id: str) -> None:
    """A run that runs again keeps why it had stopped as ``tsp.interrupted``, never as a
    stale ``tsp.error`` (``reaped``, ``interrupted``) on a run that then finishes."""
    client = MlflowClient()
    tags = client.get_run(run_id).data.tags
    if schema.ERROR in tags:
        client.set_tag(run_id, schema.INTERRUPTED, tags[schema.ERROR])
    for tag in (schema.ERROR, schema.REAPED):
        if tag in tags:
            with contextlib.suppress(MlflowException):  # gone already: nothing to move
                client.delete_tag(run_id, tag)


def check_resumable(
    run_id: str,
    *,
    stage: str,
    params: dict[str, str],
    tags: dict[str, str] | None = None,
    allow_finished: bool = False,
) -> Run:
    """The run ``run_id`` if it can continue with these settings; else a clear error.

    It must be a ``stage`` run, not finished (unless ``allow_finished``), not a sweep
    trial, started with the same semantic ``params`` and ``tags`` (e.g. the same encoder
    runs). A RUNNING run whose process is dead (SIGKILL) is reaped here first; one whose
    process still lives is refused.
    """
    if not RUN_ID.fullmatch(str(run_id)):
        raise UserInputError(
            f"resume={run_id!r} is not an MLflow run id (32 hexadecimal characters); copy the "
            "id from the run's page in the MLflow UI, `tsp runs` or `tsp runs reap --dry-run`"
        )
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise UserInputError(
            f"resume={run_id!r}: no such run in this tracking store; copy the id from the "
            "run's page in the MLflow UI or from `tsp runs reap --dry-run`"
        ) from None
    have = run.data.tags
    if have.get(schema.STAGE) != stage:
        raise UserInputError(
            f"resume={run_id!r} is a {have.get(schema.STAGE) or 'non-tsp-mlflow'} run, not a "
            f"{stage} run; resume it with the command that started it"
        )
    if schema.TRIAL_NUMBER in have:
        raise UserInputError(
            f"resume={run_id!r} is a sweep trial; trials are not resumed, rerun the sweep with "
            "the same --study to redo interrupted trials"
        )
    status = run.info.status
    if status == "FINISHED" and not allow_finished:
        raise UserInputError(
            f"resume={run_id!r} finished already; there is nothing to resume (drop --resume "
            "to start a new run)"
        )
    if status == "RUNNING":
        dead = why_dead(run)
        if dead is None:
            beat = float(have.get(schema.HEARTBEAT) or run.info.start_time / 1000)
            raise UserInputError(
                f"resume={run_id!r} is still RUNNING in process {have.get(schema.PROCESS, '?')} "
                f"(last heartbeat {time.time() - beat:.0f} s ago); stop that process first. If "
                f"its machine is gone, `tsp runs reap` marks it KILLED after "
                f"{STALE_AFTER_SECONDS:.0f} s without a heartbeat"
            )
        mark_killed(dead, client)
        print(f"run {run_id} was left RUNNING by a dead process ({dead.reason}): marked KILLED")
    code = (tags or {}).get(schema.CODE_VERSION)
    if code and have.get(schema.CODE_VERSION, code) != code:
        raise UserInputError(
            f"resume={run_id!r} was trained by other code ({schema.CODE_VERSION}: run has "
            f"{have[schema.CODE_VERSION]!r}, now {code!r}); a run is continued only by the code "
            "that started it: check that version out, or start a new run"
        )
    # A param the run lacks was never logged (killed while logging them): not a conflict.
    differ = {
        k: (run.data.params[k], v)
        for k, v in semantic_params(params).items()
        if k in run.data.params and run.data.params[k] != v
    }
    differ.update({k: (have.get(k), v) for k, v in (tags or {}).items() if have.get(k) != v})
    if differ:
        shown = sorted(differ.items())[:5]
        details = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in shown)
        more = f" (and {len(differ) - 5} more)" if len(differ) > 5 else ""
        raise UserInputError(
            f"resume={run_id!r} was started with other settings ({details}{more}); rerun the "
            "command that started it, adding only --resume"
        )
    return run


def children(parent_id: str, stage: str) -> list[Run]:
    """A parent's ``stage`` children, oldest first, with those left RUNNING by a dead
    process reaped (returned KILLED): what a resumed pipeline continues."""
    client = MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    found: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            f"tags.`{schema.PARENT_RUN_ID}` = '{parent_id}' and tags.`{schema.STAGE}` = '{stage}'",
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        for run in page:
            dead = why_dead(run)
            if dead is not None:
                mark_killed(dead, client)
                run = client.get_run(run.info.run_id)
            found.append(run)
        token = page.token
        if not token:
            return found


CLAIM_SECONDS = 1.0


def claim(run_id: str) -> None:
    """Called right after reopening ``run_id`` for a resume: two processes resuming the
    same run at once both passed :func:`check_resumable`, and both just wrote their process
    record. After a pause only the last writer still finds its own; the other stands down
    (:class:`ResumeTaken`) before it logs anything."""
    time.sleep(CLAIM_SECONDS)
    holder = MlflowClient().get_run(run_id).data.tags.get(schema.PROCESS)
    if holder != this_process():
        raise ResumeTaken(
            f"resume={run_id!r}: another process ({holder}) is resuming this run at the same "
            "time; it continues the run, and this one stops without touching it"
        )
