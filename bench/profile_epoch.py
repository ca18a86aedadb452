"""Where the time goes: ``torch.profiler`` over one tracked avdigits epoch.

The second of three ``multimodal``-style epochs (the real loop and tracking calls with the
defaults, a sqlite store): after a warm-up epoch, and not the last, whose writes are the
end of training. Its wall time is split into what runs on the training thread: data
loading, backward, optimizer, validation of every pattern, the other torch operators
(the forward pass and loss, the state snapshot) and the rest (Python: metrics, the epoch
hook, the tracking calls). The table lists the operators with the most self time.

    python -m bench.profile_epoch                # also writes trace.json.gz beside the results
    python -m bench.profile_epoch --quick
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict

import mlflow
from torch.profiler import ProfilerActivity, profile

from bench.harness import Result, Table, arguments, avdigits, quiet_mlflow, save
from tsp_mlflow.recipes.orchestrator import train_and_test
from tsp_mlflow.tracking.session import tracked_run

# Top-level events on the training thread, by name prefix.
PHASES = (
    ("validate", "validation (every pattern)"),
    ("enumerate(DataLoader)", "data loading (train)"),
    ("autograd::engine", "backward"),
    ("Optimizer.", "optimizer (step, zero_grad)"),
)


class ProfileSecondEpoch:
    """An ``on_epoch_end`` hook that starts the profiler after epoch 1 and stops it after 2."""

    def __init__(self, activities: list[ProfilerActivity]) -> None:
        self.profiler = profile(activities=activities)
        self.wall = 0.0
        self._start = 0.0

    def __call__(self, epoch: int, *_: object) -> None:
        if epoch == 1:
            self.profiler.__enter__()
            self._start = time.perf_counter()
        elif epoch == 2:
            self.wall = time.perf_counter() - self._start
            self.profiler.__exit__(None, None, None)


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    quiet_mlflow()
    setup = avdigits(
        [f"trainer.epochs={2 if args.quick else 3}"], quick=args.quick
    )  # profiles epoch 2
    activities = [ProfilerActivity.CPU]
    if setup.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    hook = ProfileSecondEpoch(activities)
    with tempfile.TemporaryDirectory(prefix="tsp-bench-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        model, loaders = setup.model(), setup.loaders()
        with tracked_run(run_name="profile", tags={}):
            train_and_test(
                setup.cfg,
                model,
                loaders,
                setup.task,
                setup.device,
                started=time.perf_counter(),
                on_epoch_end=hook,
            )
    prof = hook.profiler

    events = prof.events()
    # The profiler numbers threads itself; "validate" is recorded by the training loop.
    main_thread = next(e.thread for e in events if e.name == "validate")
    phases: dict[str, float] = defaultdict(float)
    writer_s = 0.0
    for event in events:
        if event.cpu_parent is not None:
            continue
        seconds = event.cpu_time_total / 1e6
        if event.thread != main_thread:
            writer_s += seconds
            continue
        label = next((lab for prefix, lab in PHASES if event.name.startswith(prefix)), None)
        phases[label or "other torch operators (forward pass, loss, snapshot)"] += seconds
    phases["the rest (Python: metrics, hooks, tracking calls)"] = hook.wall - sum(phases.values())

    result = Result("profile_epoch", "Where the time goes", quick=args.quick)
    result.add_table(
        Table(
            f"one avdigits epoch on the training thread, {hook.wall:.3f} s wall "
            f"(batch {setup.cfg.trainer.batch_size}, {len(loaders['train'])} steps)",
            ["phase", "seconds", "share"],
            [
                [name, s, f"{100 * s / hook.wall:.1f}%"]
                for name, s in sorted(phases.items(), key=lambda kv: -kv[1])
            ],
        )
    )
    result.notes.append(
        f"Operators recorded on other threads (a background tracking writer, when on; "
        f"DataLoader workers run in their own processes): {writer_s * 1000:.1f} ms."
    )
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    rows = []
    for average in sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:12]:
        rows.append(
            [
                f"`{average.key}`",
                average.count,
                average.self_cpu_time_total / 1000,
                f"{100 * average.self_cpu_time_total / 1e6 / hook.wall:.1f}%",
            ]
        )
    result.add_table(
        Table(
            "operators with the most self CPU time in that epoch",
            ["operator", "calls", "self CPU (ms)", "of the epoch"],
            rows,
        )
    )
    path = save(result, args.out)
    prof.export_chrome_trace(str(path.with_name("trace.json.gz")))  # gzip: smaller
    print(top if not args.quick else "", end="")


if __name__ == "__main__":
    main()
