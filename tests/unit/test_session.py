"""Where tracked runs land when one process runs several commands (the Python API, a
notebook, a test): an earlier command's experiment choice never places a later run."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from tsp_mlflow.tracking import session
from tsp_mlflow.tracking.session import tracked_run, use_experiment


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no experiment chosen by tsp yet (ids
    repeat across the tests' stores, so an earlier test's choice would look like ours)."""
    monkeypatch.setattr(session, "_experiment_we_set", None)
    monkeypatch.setattr(session, "_experiment_pending", None)


def experiment_name_of(client: MlflowClient, run_id: str) -> str:
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def test_a_deferred_choice_left_by_a_failed_command_does_not_place_the_next_run(
    tracking_uri: str,
) -> None:
    """Regression: a command that chose its experiment for later and failed before its
    run started (bad input) left the choice pending; the next command selected its own
    experiment, yet its run was created in the stale one."""
    use_experiment("mmimdb", when_a_run_starts=True)  # the failed command's choice
    use_experiment("avdigits")  # the next command's
    with tracked_run(run_name="r", tags={}) as run:
        pass
    client = MlflowClient(tracking_uri)
    assert experiment_name_of(client, run.info.run_id) == "avdigits"
    assert client.get_experiment_by_name("mmimdb") is None  # and nothing empty created


def test_a_deferred_choice_yields_to_the_users_experiment_too(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = MlflowClient(tracking_uri).create_experiment("mine")
    use_experiment("mmimdb", when_a_run_starts=True)  # a failed command's choice
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", mine)  # the user's, for the next command
    use_experiment("avdigits")
    with tracked_run(run_name="r", tags={}) as run:
        pass
    assert run.info.experiment_id == mine


def test_a_deferred_choice_is_the_newest_one(tracking_uri: str) -> None:
    use_experiment("first")
    use_experiment("second", when_a_run_starts=True)
    assert MlflowClient(tracking_uri).get_experiment_by_name("second") is None  # not yet
    with tracked_run(run_name="r", tags={}) as run:
        pass
    assert experiment_name_of(MlflowClient(tracking_uri), run.info.run_id) == "second"


def test_a_run_reopens_whatever_experiment_the_process_selected_since(
    tracking_uri: str,
) -> None:
    """Regression: resuming a run failed with MLflow's "active experiment ID does not
    match" when this process had selected another experiment since (a notebook's
    set_experiment, an earlier command)."""
    use_experiment("avdigits")
    with tracked_run(run_name="r", tags={}) as run:
        pass
    mlflow.set_experiment("elsewhere")
    with tracked_run(run_name="r", tags={}, run_id=run.info.run_id) as again:
        mlflow.log_param("resumed", "yes")
    client = MlflowClient(tracking_uri)
    reopened = client.get_run(run.info.run_id)
    assert again.info.run_id == run.info.run_id and reopened.info.status == "FINISHED"
    assert reopened.data.params["resumed"] == "yes"
    assert experiment_name_of(client, run.info.run_id) == "avdigits"  # it never moves
