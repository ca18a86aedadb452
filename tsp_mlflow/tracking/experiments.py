"""Experiments by name or id, with one error message for every command that takes one."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking.params import redact_uri


class ExperimentNotFound(UserInputError):
    """No experiment has this name or id; the message lists those that exist."""


def resolve_experiment(client: MlflowClient, experiment: str) -> Experiment:
    """An experiment by name, or by id; a clear error listing the experiments otherwise."""
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        try:
            found = client.get_experiment(experiment)
        except MlflowException:
            found = None
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise ExperimentNotFound(
            f"experiment={experiment!r} not found in {redact_uri(client.tracking_uri)}; "
            f"experiments: {', '.join(names) or 'none'}"
        )
    return found
