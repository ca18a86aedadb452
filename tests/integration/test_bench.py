"""Every benchmark's quick mode runs end to end and renders its section (a smoke test: no
timing is asserted, only that each prints its ratios and writes its results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS
from tests.integration.flow import REPO

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_mode_prints_its_ratios_and_renders_its_section(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    docs = (REPO / "docs" / "benchmarks.md").read_bytes()
    out = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]

    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["quick"] is True and result["tables"]
    for ratio in result["ratios"]:
        assert ratio["value"] > 0 and f"{ratio['name']}: {ratio['value']:.3f}" in out.stdout
    page = (tmp_path / "benchmarks.md").read_text()
    section = page.split(f"<!-- bench:{name} -->")[1].split(f"<!-- /bench:{name} -->")[0]
    assert "Quick mode" in section and result["tables"][0]["columns"][0] in section
    if result["ratios"]:
        assert (tmp_path / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (REPO / "docs" / "benchmarks.md").read_bytes() == docs  # quick never writes there
