"""`loopback_server` refuses a port something already listens on: its health check would
otherwise be answered by that other server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking.loopback_server import loopback_server


def test_a_port_in_use_is_refused_before_any_server_starts(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with (
            pytest.raises(UserInputError, match=f"port {port} is in use on 127.0.0.1"),
            loopback_server(tmp_path, port=port),
        ):
            pass  # pragma: no cover
    assert not (tmp_path / "server.log").exists()  # no process was started
