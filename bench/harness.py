"""What every benchmark shares: the avdigits set-up, interleaved timing, ratios with
bootstrap intervals, and the results file that ``bench.report`` renders into
``docs/benchmarks.md``.

Only ratios of arms measured side by side in one process mean anything on a shared
machine, so arms run in alternating rounds (the order rotates every round) and each
ratio comes with a 95% bootstrap interval over the rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from scipy import stats
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"


@dataclass
class Ratio:
    """A headline ratio, its 95% bootstrap interval and its target (if the issue set one)."""

    name: str
    value: float
    low: float
    high: float
    target: str = ""  # e.g. "<= 1.03"; empty: reported, no target

    @property
    def met(self) -> bool | None:
        if not self.target:
            return None
        op, bound = self.target.split()
        return self.value <= float(bound) if op == "<=" else self.value >= float(bound)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Result:
    """One benchmark's output: what ``bench.report`` renders and plots."""

    name: str
    title: str
    quick: bool
    ratios: list[Ratio] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    date: str = ""

    def add_ratio(self, ratio: Ratio) -> None:
        self.ratios.append(ratio)
        verdict = {True: " (target met)", False: " (TARGET MISSED)", None: ""}[ratio.met]
        target = f", target {ratio.target}" if ratio.target else ""
        print(
            f"{ratio.name}: {ratio.value:.3f} [95% CI {ratio.low:.3f}, {ratio.high:.3f}]"
            f"{target}{verdict}",
            flush=True,
        )

    def add_table(self, table: Table) -> None:
        self.tables.append(table)
        print(f"\n{table.title}")
        for line in markdown_table(table):
            print(line)
        print(flush=True)


def markdown_table(table: Table) -> list[str]:
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    return [head, rule, *("| " + " | ".join(map(_cell, row)) + " |" for row in table.rows)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def arguments(description: str, **defaults: Any) -> argparse.ArgumentParser:
    """``--quick`` (the CI smoke test: seconds, writes nowhere in the repository) and
    ``--out`` (where the results and the rendered page go)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds, for CI: the numbers are not meaningful"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: bench/results; --quick: a temp folder)",
    )
    parser.set_defaults(**defaults)
    return parser


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def save(result: Result, out: Path | None) -> Path:
    """Write ``<name>.json`` and re-render the page beside it: ``docs/benchmarks.md`` for
    full runs into ``bench/results``, ``<out>/benchmarks.md`` otherwise."""
    from bench.report import render

    if out is None and result.quick:
        out = Path(os.environ.get("TSP_BENCH_OUT") or _temp_folder())
    out = out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    result.machine = machine()
    result.date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path = out / f"{result.name}.json"
    path.write_text(json.dumps(asdict(result), indent=1) + "\n")
    page = DOCS if out.resolve() == RESULTS.resolve() else out / "benchmarks.md"
    render(out, page)
    print(f"results: {path}\npage: {page}")
    return path


def _temp_folder() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="tsp-bench-")


def load(path: Path) -> Result:
    raw = json.loads(path.read_text())
    raw["ratios"] = [Ratio(**r) for r in raw["ratios"]]
    raw["tables"] = [Table(**t) for t in raw["tables"]]
    return Result(**raw)


# --- timing ------------------------------------------------------------------------------


class Measured(list[float]):
    """One arm's samples, each with the round it was measured in (``rounds``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds: list[int] = []


def interleave(
    arms: Mapping[str, Callable[[], Sequence[float]]], rounds: int
) -> dict[str, Measured]:
    """Run every arm once per round, rotating the order each round; keep the samples by
    round.

    Rotation spreads slow drift of the machine (another tenant, thermal state) over all
    arms instead of charging it to whichever ran last.
    """
    names = list(arms)
    samples = {n: Measured() for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            found = arms[name]()
            samples[name].extend(found)
            samples[name].rounds.extend([r] * len(found))
    return samples


def ratio(
    name: str, numerator: Sequence[float], denominator: Sequence[float], target: str = ""
) -> Ratio:
    """median(numerator) / median(denominator), with a 95% percentile bootstrap interval.

    The bootstrap resamples whole rounds, both arms together: the epochs of one run are
    not independent, and arms measured in the same round share the machine's state then.
    Plain lists count one round per sample (paired by position). Fewer than 3 rounds
    give no interval.
    """
    a, b = _by_round(numerator), _by_round(denominator)
    value = float(
        np.median(np.concatenate(list(a.values()))) / np.median(np.concatenate(list(b.values())))
    )
    keys = sorted(set(a) & set(b))
    if len(keys) < 3:
        return Ratio(name, value, float("nan"), float("nan"), target)

    def statistic(picked: np.ndarray) -> float:
        top = np.concatenate([a[keys[int(i)]] for i in picked])
        bottom = np.concatenate([b[keys[int(i)]] for i in picked])
        return float(np.median(top) / np.median(bottom))

    boot = stats.bootstrap(
        (np.arange(len(keys)),),
        statistic,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(0),
    )
    interval = boot.confidence_interval
    return Ratio(name, value, float(interval.low), float(interval.high), target)


def _by_round(values: Sequence[float]) -> dict[int, np.ndarray]:
    rounds = getattr(values, "rounds", None) or list(range(len(values)))
    grouped: dict[int, list[float]] = {}
    for r, v in zip(rounds, values, strict=True):
        grouped.setdefault(r, []).append(float(v))
    return {r: np.asarray(v) for r, v in grouped.items()}


class EpochClock:
    """Wall time between consecutive epoch ends: an ``on_epoch_end`` hook.

    An interval covers everything between two epoch ends (training, validation of every
    pattern and whatever the recipe does with the epoch), unlike the loop's own
    ``time/epoch_s``, which stops before the epoch is logged.
    """

    def __init__(self) -> None:
        self.ends = [time.perf_counter()]
        self.compute: list[float] = []  # the loop's own seconds per epoch (time/epoch_s)

    def __call__(self, epoch: int = 0, metrics: object = None, seconds: float = 0.0) -> None:
        self.ends.append(time.perf_counter())
        self.compute.append(seconds)

    def wall_over_compute(self) -> list[float]:
        """Per epoch, wall time between epoch ends / the loop's own time for that epoch:
        the share spent outside training (logging, checkpoints), paired within each epoch,
        so drift of the machine's speed cancels. It cannot see work that slows training
        itself down (a writer thread, a server on the same cores)."""
        gaps = list(np.diff(self.ends))
        paired = [g / c for g, c in zip(gaps, self.compute, strict=True) if c > 0]
        return paired[1:-1] if len(paired) > 2 else paired[1:] or paired

    def intervals(self) -> list[float]:
        """Per-epoch seconds. The first epoch (allocator and cache warm-up) is left out, and
        so is the last one when there are three or more: its end-of-training writes are
        waited for at different points inline and in the background, so no arm's last
        interval is comparable."""
        gaps = list(np.diff(self.ends))
        return gaps[1:-1] if len(gaps) > 2 else gaps[1:] or gaps


# --- the avdigits set-up -------------------------------------------------------------------


@dataclass
class Setup:
    """A composed ``multimodal`` config with its task and datasets, built once."""

    cfg: DictConfig
    task: Any
    modalities: tuple[str, ...]
    datasets: dict[str, Any]
    device: torch.device

    def model(self, seed: int = 0) -> Any:
        from tsp_mlflow.models.late_fusion import LateFusionModel
        from tsp_mlflow.recipes.setup import build_encoder
        from tsp_mlflow.training.runtime import seed_everything

        seed_everything(seed)
        encoders = {m: build_encoder(self.cfg.model.encoders, m) for m in self.modalities}
        fusion = instantiate(self.cfg.model.fusion)(
            in_dims={m: e.out_dim for m, e in encoders.items()}
        )
        head = instantiate(self.cfg.model.head)(
            in_features=fusion.out_dim, out_features=self.task.num_outputs
        )
        return LateFusionModel(encoders, fusion, head).to(self.device)

    def loaders(self, seed: int = 0, **loader_kwargs: Any) -> dict[str, DataLoader]:
        from tsp_mlflow.recipes.setup import make_loaders

        generator = torch.Generator().manual_seed(seed)
        if not loader_kwargs:
            return make_loaders(self.cfg.trainer, self.datasets, generator, self.device)
        return {
            split: DataLoader(
                d,
                batch_size=self.cfg.trainer.batch_size,
                shuffle=split == "train",
                generator=generator if split == "train" else None,
                **loader_kwargs,
            )
            for split, d in self.datasets.items()
        }

    def fit_epochs(self, **loader_kwargs: Any) -> list[float]:
        """Seconds per epoch (``EpochClock``) of the real loop, untracked, on a fresh model."""
        from tsp_mlflow.data.batch import all_patterns
        from tsp_mlflow.training.loop import fit

        model = self.model()
        loaders = self.loaders(**loader_kwargs)
        optimizer, scheduler = self.optimizer(model)
        clock = EpochClock()
        fit(
            model,
            loaders["train"],
            loaders["val"],
            optimizer=optimizer,
            scheduler=scheduler,
            epochs=self.cfg.trainer.epochs,
            patterns=all_patterns(self.modalities),
            task=self.task,
            monitor_pattern=self.monitor_pattern,
            device=self.device,
            on_epoch_end=clock,
        )
        return clock.intervals()

    def optimizer(self, model: torch.nn.Module) -> tuple[Any, Any]:
        from tsp_mlflow.recipes.setup import make_optimizer

        return make_optimizer(self.cfg.optim, self.cfg.scheduler, model)

    @property
    def monitor_pattern(self) -> str:
        from tsp_mlflow.data.batch import pattern_name

        return pattern_name(self.modalities, self.modalities)


# --quick: encoders 4 channels wide instead of 16, so a smoke test trains in seconds.
QUICK_OVERRIDES = ("model.encoders.audio.width=4", "model.encoders.image.width=4")


def avdigits(overrides: Sequence[str] = (), quick: bool = False) -> Setup:
    """The built-in dataset with the ``multimodal`` defaults (small CNNs, batch 32)."""
    from tsp_mlflow.config import compose_config
    from tsp_mlflow.recipes.setup import build_task, make_datasets
    from tsp_mlflow.training.runtime import resolve_device

    extra = QUICK_OVERRIDES if quick else ()
    cfg, _ = compose_config("multimodal", ["representations=false", *extra, *overrides])
    modalities = tuple(cfg.data.modalities)
    datasets = make_datasets(cfg.data, modalities, missing=cfg.get("missing"), seed=cfg.seed)
    task = build_task(cfg.task, cfg.data)
    return Setup(cfg, task, modalities, datasets, resolve_device(cfg.runtime.device))


def quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
