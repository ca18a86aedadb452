"""The benchmarks' quick modes run end to end (a smoke test: no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.flow import REPO

pytestmark = pytest.mark.integration


def test_analysis_fetch_benchmark_quick_mode() -> None:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "bench/analysis_fetch.py", "--quick"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| naive: search + get_metric_history per run and key |" in out.stdout
    assert "fetch speed-up (naive / ours):" in out.stdout
