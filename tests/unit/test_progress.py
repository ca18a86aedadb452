"""Progress: bars with ETA and the live validation metric on a terminal, one plain line
per epoch (and per pipeline cell) elsewhere."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.training.progress import CellProgress, EpochProgress, progress_mode

MONITOR = "val/audio-image/accuracy"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def train(progress: EpochProgress, epochs: int, steps: int = 3) -> None:
    with progress:
        for epoch in range(1, epochs + 1):
            progress.start_epoch(epoch, steps)
            for _ in range(steps):
                progress.advance()
            progress.end_epoch(epoch, 2.0 / epoch, 0.1 * epoch, 0.1 * epoch, epoch, 2.0 * epoch)


def test_without_a_terminal_each_epoch_is_one_plain_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TSP_PROGRESS", raising=False)
    out = io.StringIO()
    train(EpochProgress("scratch-seed0", 3, MONITOR, stream=out), 3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0] == (
        "scratch-seed0 epoch 1/3: train loss 2.0000, val/audio-image/accuracy 0.1000 "
        "(best 0.1000 @ 1), 2.0 s, ETA 4 s"  # two epochs left at the mean of 2.0 s
    )
    assert lines[1].endswith("4.0 s, ETA 3 s")  # mean of 2 and 4 s, one epoch left
    assert lines[2].endswith("ETA 0 s")


def test_a_resumed_run_counts_from_its_first_new_epoch() -> None:
    out = io.StringIO()
    progress = EpochProgress("r", 5, MONITOR, first_epoch=4, mode="lines", stream=out)
    with progress:
        progress.end_epoch(4, 1.0, 0.5, 0.5, 4, 1.0)
    assert out.getvalue().startswith("r epoch 4/5: ")


def test_on_a_terminal_bars_show_eta_and_the_live_validation_metric(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TSP_PROGRESS", raising=False)
    screen = Terminal()
    console = Console(file=screen, force_terminal=True, width=160)
    assert progress_mode(screen) == "bars"
    train(EpochProgress("pretrained-seed1", 2, MONITOR, stream=screen, console=console), 2)
    drawn = screen.getvalue()
    assert "pretrained-seed1" in drawn and "ETA" in drawn
    assert f"{MONITOR} 0.2000 (best 0.2000 @ 2)" in drawn
    assert re.search(r"2/2", drawn)  # the epoch bar completed
    assert " epoch 2/2: " not in drawn  # no plain lines on a terminal


def test_a_pipeline_prints_one_line_per_cell_without_a_terminal() -> None:
    out = io.StringIO()
    with CellProgress("pipeline avdigits: fusion runs", 2, mode="lines", stream=out) as cells:
        cells.cell_done("multimodal a: run 1")
        cells.cell_done("multimodal b: finished earlier, run 2")
    assert out.getvalue().splitlines() == [
        "[1/2] multimodal a: run 1",
        "[2/2] multimodal b: finished earlier, run 2",
    ]


def test_tsp_progress_chooses_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSP_PROGRESS", "off")
    out = io.StringIO()
    train(EpochProgress("quiet", 2, MONITOR, stream=out), 2)
    assert out.getvalue() == ""
    monkeypatch.setenv("TSP_PROGRESS", "lines")
    assert progress_mode(Terminal()) == "lines"
    monkeypatch.setenv("TSP_PROGRESS", "fancy")
    with pytest.raises(
        UserInputError, match=r"TSP_PROGRESS='fancy': choose one of bars, lines, off"
    ):
        progress_mode()


def test_a_bad_tsp_progress_is_refused_before_any_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from tsp_mlflow.config import compose_config
    from tsp_mlflow.recipes.config_checks import check_training_config

    cfg, _ = compose_config("multimodal", [])
    monkeypatch.setenv("TSP_PROGRESS", "bar")
    with pytest.raises(UserInputError, match="TSP_PROGRESS='bar'"):
        check_training_config(cfg, ())  # what every recipe calls before it opens a run
