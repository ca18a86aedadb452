"""Live progress for epochs, batches and pipeline cells, or one line per epoch.

On a terminal, rich draws bars with ETA and the live validation metric; a pipeline's cell
bar stays above the bars of the run it is training. Elsewhere (CI logs, a file, a pipe)
each epoch prints one plain line, and a pipeline one line per cell. ``TSP_PROGRESS``
chooses explicitly: ``bars``, ``lines`` or ``off``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tsp_mlflow.errors import UserInputError

MODES = ("bars", "lines", "off")


def progress_mode(stream: TextIO | None = None) -> str:
    """``$TSP_PROGRESS`` if set, else bars on a terminal and lines elsewhere."""
    chosen = os.environ.get("TSP_PROGRESS", "").strip().lower()
    if chosen:
        if chosen not in MODES:
            raise UserInputError(f"TSP_PROGRESS={chosen!r}: choose one of {', '.join(MODES)}")
        return chosen
    stream = stream or sys.stdout
    return "bars" if stream.isatty() else "lines"


class _Board:
    """The one live display of this process: bars are added and removed as work starts
    and ends; it is drawn while any bar exists."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.users = 0

    @contextmanager
    def session(self, console: Console | None = None) -> Iterator[Progress]:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=console,
                transient=False,
            )
            self.progress.start()
        self.users += 1
        try:
            yield self.progress
        finally:
            self.users -= 1
            if self.users == 0:
                self.progress.stop()
                self.progress = None


BOARD = _Board()


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


class EpochProgress:
    """Progress of one training run: an epoch bar and a batch bar, or one line per epoch.

    Args:
        label: the run's name, shown first.
        epochs: the run's last epoch; ``first_epoch`` > 1 when a resumed run goes on.
        monitor: the validation metric shown, e.g. ``val/audio-image/accuracy``.
    """

    def __init__(
        self,
        label: str,
        epochs: int,
        monitor: str,
        *,
        first_epoch: int = 1,
        mode: str | None = None,
        console: Console | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.label, self.epochs, self.monitor = label, epochs, monitor
        self.mode = mode or progress_mode(stream)
        self.stream = stream
        self.console = console
        self.first_epoch = first_epoch
        self._progress: Progress | None = None
        self._epoch_task: TaskID | None = None
        self._batch_task: TaskID | None = None
        self._session: AbstractContextManager[Progress] | None = None
        self._seconds: list[float] = []

    def __enter__(self) -> EpochProgress:
        if self.mode == "bars":
            self._session = BOARD.session(self.console)
            self._progress = self._session.__enter__()
            self._epoch_task = self._progress.add_task(
                self.label, total=self.epochs, completed=self.first_epoch - 1, status=""
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            # A run on its own leaves its finished epoch bar (with the last metric) on
            # screen; inside a pipeline the cell bar's line reports it instead.
            alone = BOARD.users == 1
            for task in (self._batch_task, None if alone else self._epoch_task):
                if task is not None:
                    self._progress.remove_task(task)
            assert self._session is not None
            self._session.__exit__(None, None, None)
            self._progress = self._session = None

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self._progress is None:
            return
        if self._batch_task is None:
            self._batch_task = self._progress.add_task(f"  epoch {epoch}", total=steps, status="")
        else:
            self._progress.reset(
                self._batch_task, total=steps, description=f"  epoch {epoch}", status=""
            )

    def advance(self) -> None:
        if self._progress is not None and self._batch_task is not None:
            self._progress.advance(self._batch_task)

    def end_epoch(
        self,
        epoch: int,
        train_loss: float,
        value: float,
        best_value: float,
        best_epoch: int,
        seconds: float,
    ) -> None:
        self._seconds.append(seconds)
        status = f"{self.monitor} {_fmt(value)} (best {_fmt(best_value)} @ {best_epoch})"
        if self._progress is not None and self._epoch_task is not None:
            self._progress.update(self._epoch_task, completed=epoch, status=status)
            return
        if self.mode != "lines":
            return
        eta = (self.epochs - epoch) * sum(self._seconds) / len(self._seconds)
        line = (
            f"{self.label} epoch {epoch}/{self.epochs}: train loss {_fmt(train_loss)}, "
            f"{status}, {seconds:.1f} s, ETA {eta:.0f} s"
        )
        print(line, file=self.stream or sys.stdout, flush=True)


class CellProgress:
    """A pipeline's (or a sweep's) outer bar: one step per grid cell, or a line per cell."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        mode: str | None = None,
        console: Console | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.label, self.total = label, total
        self.mode = mode or progress_mode(stream)
        self.stream, self.console = stream, console
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._session: AbstractContextManager[Progress] | None = None
        self.done = 0

    def __enter__(self) -> CellProgress:
        if self.mode == "bars":
            self._session = BOARD.session(self.console)
            self._progress = self._session.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None and self._session is not None:
            self._session.__exit__(None, None, None)
            self._progress = self._session = None

    def extend(self, more: int) -> None:
        """More cells than planned (adaptive seeds add them look by look)."""
        if more <= 0:
            return
        self.total += more
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=self.total)

    def cell_done(self, message: str) -> None:
        """One cell finished (trained now, or earlier): advance and say which."""
        self.done += 1
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.done, status=message)
            self._progress.console.print(f"[{self.done}/{self.total}] {message}")
        elif self.mode == "lines":
            print(
                f"[{self.done}/{self.total}] {message}", file=self.stream or sys.stdout, flush=True
            )
