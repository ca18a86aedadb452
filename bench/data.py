"""Data: avdigits generation, loader vs model throughput, DataLoader settings, peak memory.

1. Generating avdigits into an empty cache, and opening the cached copy.
2. Loader throughput (batches through the real dataset and collate, no model) vs model
   consumption (training steps on batches already in memory): a ratio far above 1 means
   the loader never starves the model.
3. DataLoader settings, measured: ``num_workers`` 0/1/2, with and without
   ``persistent_workers`` (and ``pin_memory`` on CUDA), as epoch time of the real loop;
   ratios are to the configured default.
4. Peak resident memory (``ru_maxrss`` of the child process) of a training run and of an
   analysis, each as its own ``python -m tsp_mlflow`` process, beside a bare import.

    python -m bench.data                         # ~4 min
    python -m bench.data --quick
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.harness import (
    QUICK_OVERRIDES,
    Result,
    Setup,
    Table,
    arguments,
    avdigits,
    interleave,
    ratio,
    save,
)
from tsp_mlflow.data.avdigits import AVDigitsSpec, ensure_avdigits
from tsp_mlflow.training.loop import to_device


def generation(result: Result, rounds: int) -> None:
    generate, reopen = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="tsp-bench-") as cache:
            start = time.perf_counter()
            ensure_avdigits(cache, AVDigitsSpec())
            generate.append(time.perf_counter() - start)
            start = time.perf_counter()
            ensure_avdigits(cache, AVDigitsSpec())
            reopen.append(time.perf_counter() - start)
    result.add_table(
        Table(
            f"avdigits (1,797 digit scans + DTMF spectrograms), {rounds} rounds",
            ["step", "median (s)", "min (s)", "max (s)"],
            [
                [
                    "generate into an empty cache",
                    float(np.median(generate)),
                    min(generate),
                    max(generate),
                ],
                ["find the cached copy", float(np.median(reopen)), min(reopen), max(reopen)],
            ],
        )
    )


def throughput(setup: Setup, result: Result, rounds: int) -> None:
    loader = setup.loaders()["train"]
    batches = list(loader)
    model = setup.model()
    optimizer, _ = setup.optimizer(model)

    def load() -> list[float]:
        start = time.perf_counter()
        n = sum(len(b["target"]) for b in loader)
        return [n / (time.perf_counter() - start)]

    def consume() -> list[float]:
        model.train()
        start = time.perf_counter()
        for batch in batches:
            batch = to_device(batch, setup.device)
            target = setup.task.target(batch["target"])
            loss = setup.task.loss(model(batch["inputs"], batch["present"]), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return [sum(len(b["target"]) for b in batches) / (time.perf_counter() - start)]

    samples = interleave({"loader": load, "model": consume}, rounds)
    result.add_table(
        Table(
            f"train split, batch {setup.cfg.trainer.batch_size}, num_workers "
            f"{setup.cfg.trainer.num_workers}, {rounds} rounds",
            ["what", "median samples/s"],
            [
                ["loader alone (dataset + collate)", float(np.median(samples["loader"]))],
                [
                    "model alone (training steps on batches in memory)",
                    float(np.median(samples["model"])),
                ],
            ],
        )
    )
    result.add_ratio(
        ratio("samples/s, loader / model training", samples["loader"], samples["model"])
    )


def loader_settings(setup: Setup, result: Result, rounds: int, quick: bool) -> None:
    settings: dict[str, dict[str, object]] = {"default (num_workers=0)": {}}
    for workers in (1,) if quick else (1, 2):
        for persistent in (False, True):
            settings[f"num_workers={workers}, persistent={persistent}"] = {
                "num_workers": workers,
                "persistent_workers": persistent,
            }
    if setup.device.type == "cuda":
        settings["num_workers=0, pin_memory=False"] = {"pin_memory": False}

    samples = interleave(
        {name: (lambda k=kwargs: setup.fit_epochs(**k)) for name, kwargs in settings.items()},
        rounds,
    )
    default = "default (num_workers=0)"
    result.add_table(
        Table(
            f"epoch time of the real loop (train + every val pattern), {setup.cfg.trainer.epochs} "
            f"epochs x {rounds} rounds per setting",
            ["DataLoader setting", "median epoch (s)", "vs default"],
            [
                [name, float(np.median(s)), float(np.median(s) / np.median(samples[default]))]
                for name, s in samples.items()
            ],
        )
    )
    best = min(samples, key=lambda n: np.median(samples[n]))
    for name in settings:
        if name != default:
            result.add_ratio(
                ratio(f"epoch time, {name} / default", samples[name], samples[default])
            )
    result.notes.append(f"Fastest DataLoader setting here: {best}.")


def peak_rss(result: Result, quick: bool) -> None:
    from mlflow import MlflowClient

    from analysis.synthetic import log_synthetic_pipeline

    rows = []
    with tempfile.TemporaryDirectory(prefix="tsp-bench-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        }
        epochs = "1" if quick else "5"
        training = ["multimodal", "--epochs", epochs]
        if quick:
            training += ["--overrides", " ".join(["debug=tiny", *QUICK_OVERRIDES])]
        rows.append(
            [
                "`python -m tsp_mlflow --help` (imports only)",
                _max_rss(["tsp_mlflow", "--help"], tmp, env),
            ]
        )
        rows.append(
            [
                f"tsp multimodal --epochs {epochs} (avdigits)",
                _max_rss(["tsp_mlflow", *training], tmp, env),
            ]
        )
        client = MlflowClient(uri)
        experiment = client.create_experiment("bench-analysis")
        seeds = 5 if quick else 50
        log_synthetic_pipeline(client, experiment, seeds=seeds, epochs=20)
        rows.append(
            [
                f"tsp analyze ({2 * seeds} fusion runs x 20 epochs)",
                _max_rss(
                    ["tsp_mlflow", "analyze", "--experiment", "bench-analysis", "--no-log"],
                    tmp,
                    env,
                ),
            ]
        )
    result.add_table(
        Table("peak resident memory of each process", ["process", "peak RSS (MiB)"], rows)
    )


# Runs a module as ``python -m`` would and writes its peak RSS (VmHWM, KiB) on exit. The
# child's own rusage would not do: a child forked from this process starts with this
# process's peak, and the kernel keeps that across exec.
_PEAK_RSS = """
import atexit, runpy, sys
out = sys.argv[1]
def report():
    with open("/proc/self/status") as status, open(out, "w") as f:
        f.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(report)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _max_rss(module_args: Sequence[str], cwd: str, env: dict[str, str]) -> float:
    """Peak RSS (MiB) of ``python -m <module_args>`` in a process of its own."""
    with tempfile.NamedTemporaryFile(suffix=".kib") as peak:
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, peak.name, *module_args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(module_args)} failed:\n{done.stderr[-3000:]}")
        return int(Path(peak.name).read_text()) / 1024


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    rounds = 1 if args.quick else 3
    result = Result("data", "Data", quick=args.quick)
    generation(result, rounds)
    setup = avdigits([f"trainer.epochs={2 if args.quick else 4}"], quick=args.quick)
    throughput(setup, result, 1 if args.quick else 5)
    loader_settings(setup, result, rounds, args.quick)
    peak_rss(result, args.quick)
    save(result, args.out)


if __name__ == "__main__":
    main()
