"""The docs' commands run as written: each page's shell and Python blocks, in order, as one
script in an empty folder. A block preceded by ``<!-- docs-test: skip (why) -->`` is not
run; ``lang file=PATH`` blocks are written to PATH; ``text`` blocks are output or
placeholders. The generated reference pages match what the code generates now."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.formats import write_avmnist_npy, write_mmimdb_hdf5, write_mosi
from tsp_mlflow import reference
from tsp_mlflow.cli import main

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(
    r"(?P<skip><!-- docs-test: skip[^>]*-->\s*\n)?^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$",
    re.S | re.M,
)
END = "TSP_DOCS_EOF"


def script(page: Path) -> str:
    """The page's runnable blocks as one bash script that stops at the first failure."""
    parts = ["set -euo pipefail"]
    for block in BLOCK.finditer(page.read_text()):
        language, *attributes = block["info"].split() or [""]
        files = [a.removeprefix("file=") for a in attributes if a.startswith("file=")]
        body = block["body"]
        assert END not in body
        if block["skip"] or language not in ("bash", "python", "yaml"):
            continue
        if files:
            parts.append(
                f"mkdir -p \"$(dirname '{files[0]}')\"\ncat > '{files[0]}' <<'{END}'\n{body}{END}"
            )
        elif language == "bash":
            parts.append(body)
        elif language == "python":
            parts.append(f"python - <<'{END}'\n{body}{END}")
        else:
            raise AssertionError(f"{page.name}: a yaml block without file= cannot run:\n{body}")
    return "\n".join(parts) + "\n"


def run_page(page: Path, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TSP_"))}
    environment.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        TSP_DATA_DIR=os.environ["TSP_DATA_DIR"],  # the session's avdigits cache
        MLFLOW_DISABLE_TELEMETRY="true",
        **env,
    )
    done = subprocess.run(
        ["bash", "-c", script(page)],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (
        f"{page.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    return done


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    done = run_page(DOCS / "tutorial.md", folder, {})
    assert "torch.Size([4, 10])" in done.stdout  # the Python section's model
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")  # ./mlflow.db: no URI was set
    pipelines = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`tsp.stage` = 'pipeline'"
    )
    assert sorted(r.data.tags["tsp.dataset"] for r in pipelines) == ["avdigits", "sensors"]
    assert all(r.info.status == "FINISHED" for r in pipelines)
    # The custom dataset's encoders were registered under its own name.
    assert client.get_model_version_by_alias("sensors-gyro-encoder", "champion")
    assert (folder / "report" / "report.md").read_text().startswith("#")
    # Non-TTY progress: one line per epoch.
    assert re.search(r"^pretrain-audio epoch 2/2: train loss \d", done.stdout, re.M)


def test_the_reproduce_page_commands_pass_every_check_on_real_format_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command of the page through `tsp`'s entry point in this process (one Python
    start for all of them), with TSP_DRY_RUN=1: a real run takes hours."""
    data = tmp_path / "data"
    env = {
        "TSP_DRY_RUN": "1",
        "AVMNIST_ROOT": str(write_avmnist_npy(data / "avmnist")),
        "MMIMDB_FILE": str(write_mmimdb_hdf5(data / "mmimdb" / "multimodal_imdb.hdf5")),
        "MOSI_ROOT": str(write_mosi(data / "MOSI" / "aligned_50.pkl", "mmsa").parent),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    lines = [line for line in script(DOCS / "reproduce.md").splitlines()[1:] if line.strip()]
    assert len(lines) >= 10 and all(line.startswith("tsp ") for line in lines), lines
    for line in lines:
        words = shlex.split(os.path.expandvars(line))
        main(words[1:])
        plan = capsys.readouterr().out
        assert plan.startswith("Dry run: every input was checked"), line
        dataset = words[words.index("--dataset") + 1]
        assert f" on {dataset}" in plan and f"{dataset} (" in plan, (line, plan)  # data read
        if "grid=fusions" in line:  # the grid it would train: 6 methods x 2 conditions
            assert "fusion runs  60 (grid x 5 seeds)" in plan, plan
    assert MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(["0"]) == []
    assert not (tmp_path / "mlruns").exists()  # nothing was logged


@pytest.mark.parametrize("name", list(reference.PAGES))
def test_generated_reference_pages_are_current(name: str) -> None:
    assert (DOCS / name).read_text() == reference.PAGES[name](), (
        f"docs/{name} is out of date: run `python -m tsp_mlflow.reference docs/`"
    )
