"""Talking to a remote tracking server: a fast start-up check, and telling an unreachable
server from other errors.

MLflow retries a failing request for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), which
is right in the middle of a run (a restarting server comes back) and wrong at start-up (a
typo in the URI, a server that was never started, a wrong password). So before anything
else, one request with no retries and a short timeout asks the server for an experiment
list, with the user's credentials: it fails in seconds, naming the cause and the fix.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import requests
from mlflow.exceptions import MlflowException

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking.params import redact_uri

CHECK_TIMEOUT_SECONDS = 5
CHECK_ENDPOINT = "/api/2.0/mlflow/experiments/search"


class TrackingServerError(UserInputError):
    """The tracking server cannot be used: unreachable, or it refuses our credentials."""


def check_tracking_server(uri: str) -> None:
    """Raise :class:`TrackingServerError` unless the server at ``uri`` (http/https) answers
    and accepts this client's credentials. Other stores (sqlite, postgresql) pass."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    shown = redact_uri(uri)
    try:
        response = http_request(
            get_default_host_creds(uri),
            CHECK_ENDPOINT,
            "GET",
            params={"max_results": 1},
            max_retries=0,
            timeout=CHECK_TIMEOUT_SECONDS,
            raise_on_status=False,
        )
    except (requests.exceptions.RequestException, MlflowException) as err:
        reason = _short(err)
        if reason == "timed out":  # something listens but does not answer
            fix = "it accepts connections but does not answer: is it overloaded or hung?"
        else:
            port = urlparse(uri).port or (443 if uri.startswith("https") else 80)
            fix = (
                f"start it (e.g. `mlflow server --port {port}`) or point "
                "MLFLOW_TRACKING_URI at a running one"
            )
        raise TrackingServerError(
            f"cannot reach the tracking server at {shown} ({reason}); {fix}"
        ) from None
    if response.status_code == 401:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        if not user:
            raise TrackingServerError(
                f"the tracking server at {shown} requires authentication (HTTP 401); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            )
        raise TrackingServerError(
            f"the tracking server at {shown} rejected the credentials of user {user!r} "
            "(HTTP 401); check MLFLOW_TRACKING_PASSWORD"
        )
    if response.status_code == 403:
        raise TrackingServerError(
            f"the tracking server at {shown} denies user "
            f"{os.environ.get('MLFLOW_TRACKING_USERNAME')!r} access (HTTP 403); ask its admin "
            "for permission on the experiment"
        )
    if response.status_code >= 400:
        raise TrackingServerError(
            f"the tracking server at {shown} answered HTTP {response.status_code} to "
            f"{CHECK_ENDPOINT}; is MLFLOW_TRACKING_URI the server's base URL?"
        )


def is_unreachable(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) means the server could not be reached at all."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
        if isinstance(seen, MlflowException) and "Max retries exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(err: BaseException) -> str:
    text = redact_uri(str(err))
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "No route to host",
        "Temporary failure in name resolution",
    ):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(err).__name__
