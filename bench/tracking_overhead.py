"""Tracking overhead: the same avdigits training with full tracking vs none.

Full tracking is what every ``multimodal`` run does each epoch: metrics for every modality
pattern (one batched call), a resumable checkpoint artifact (the previous one deleted),
and ``metrics.json``. The untracked arm runs the same loop (``fit``) on the same model and
data with no tracking call at all. Tracked arms log to a sqlite store and to a local
``mlflow server`` (sqlite backend, proxied artifacts), each with the writes on the
background thread (the default) and inline (``tracking.background_writes=false``).

The ratio is of median epoch times, an epoch being the wall time between two epoch ends
(so the time spent logging is inside it). Target: <= 1.03.

    python -m bench.tracking_overhead            # 6 rounds x 6 epochs per arm (~5 min)
    python -m bench.tracking_overhead --quick    # 1 round x 2 epochs: a smoke test
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np

from bench.harness import (
    EpochClock,
    Result,
    Setup,
    Table,
    arguments,
    avdigits,
    interleave,
    quiet_mlflow,
    ratio,
    save,
)
from tsp_mlflow.data.batch import all_patterns
from tsp_mlflow.recipes.common import train_and_test
from tsp_mlflow.tracking.local_server import local_server
from tsp_mlflow.tracking.session import tracked_run
from tsp_mlflow.training.loop import fit

TARGET = "<= 1.03"


def untracked(setup: Setup) -> list[float]:
    model, loaders = setup.model(), setup.loaders()
    optimizer, scheduler = setup.optimizer(model)
    clock = EpochClock()
    fit(model, loaders["train"], loaders["val"], optimizer=optimizer, scheduler=scheduler,
        epochs=setup.cfg.trainer.epochs, patterns=all_patterns(setup.modalities),
        task=setup.task, monitor_pattern=setup.monitor_pattern, device=setup.device,
        on_epoch_end=clock)  # fmt: skip
    return clock.intervals()


def tracked(setup: Setup, uri: str, background: bool, name: str) -> list[float]:
    setup.cfg.tracking.background_writes = background
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-tracking")
    model, loaders = setup.model(), setup.loaders()
    clock, start = EpochClock(), time.perf_counter()
    with tracked_run(run_name=name, tags={}):
        train_and_test(setup.cfg, model, loaders, setup.task, setup.device, start,
                       on_epoch_end=clock)  # fmt: skip
    return clock.intervals()


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    quiet_mlflow()
    epochs, rounds = (2, 1) if args.quick else (6, 6)
    setup = avdigits([f"trainer.epochs={epochs}"])
    result = Result("tracking_overhead", "Tracking overhead", quick=args.quick)
    with (
        tempfile.TemporaryDirectory(prefix="tsp-bench-") as tmp,
        local_server(Path(tmp) / "server") as server,
    ):
        stores = {"sqlite": f"sqlite:///{tmp}/mlflow.db", "server": server}
        names = [f"{store}, {mode}" for store in stores for mode in ("background", "inline")]
        arms = {"none": lambda: untracked(setup)}
        for name in names:
            store, mode = name.split(", ")
            arms[name] = lambda s=store, m=mode, n=name: tracked(
                setup, stores[s], m == "background", n
            )
        samples = interleave(arms, rounds)

    none = np.median(samples["none"])
    result.add_table(Table(
        f"avdigits, {epochs} epochs x {rounds} rounds per arm; epoch = wall time between "
        "epoch ends (first epoch of each run left out)",
        ["tracking", "median epoch (s)", "epochs measured", "overhead per epoch (ms)"],
        [[name, float(np.median(s)), len(s), 1000 * float(np.median(s) - none)]
         for name, s in samples.items()],
    ))  # fmt: skip
    for name in names:
        target = TARGET if name.endswith("background") else ""
        result.add_ratio(
            ratio(f"epoch time, {name} / none", samples[name], samples["none"], target)
        )
    save(result, args.out)


if __name__ == "__main__":
    main()
