"""Pipeline reuse: a second identical ``tsp pipeline`` vs the first.

The first pipeline pretrains each modality's encoder, trains the fusion grid and analyses.
The second finds the identical pretrain runs (same config hash and code version, FINISHED)
and reuses them, so it only trains the fusion grid again. Each command runs as a user runs
it, in its own process, on a fresh sqlite store per round; the ratio is wall time
second / first, and the second must create no pretrain run (checked here).

    python -m bench.pipeline_reuse               # seeds 2, 3 epochs, 4 rounds (~8 min)
    python -m bench.pipeline_reuse --quick       # seeds 1, 1 epoch, narrow encoders, 1 round
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from bench.harness import QUICK_OVERRIDES, Result, Table, arguments, ratio, save
from tsp_mlflow.tracking import schema


def pipeline(store: Path, seeds: int, epochs: int, overrides: str) -> float:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    command = [
        sys.executable,
        "-m",
        "tsp_mlflow",
        "pipeline",
        "--seeds",
        str(seeds),
        "--epochs",
        str(epochs),
        "--overrides",
        overrides,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=store, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def pretrain_runs(client: MlflowClient) -> set[str]:
    found = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`{schema.STAGE}` = '{schema.STAGE_PRETRAIN}'",
    )
    return {r.info.run_id for r in found}


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    seeds, epochs, rounds = (1, 1, 1) if args.quick else (2, 3, 4)
    overrides = " ".join(["debug=tiny", *QUICK_OVERRIDES]) if args.quick else ""
    first, second, rows = [], [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="tsp-bench-") as tmp:
            store = Path(tmp)
            first.append(pipeline(store, seeds, epochs, overrides))
            client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
            after_first = pretrain_runs(client)
            second.append(pipeline(store, seeds, epochs, overrides))
            after_second = pretrain_runs(client)
            new = after_second - after_first
            if new:
                raise SystemExit(f"the second pipeline created pretrain runs {sorted(new)}")
            (latest, *_) = client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                f"tags.`{schema.STAGE}` = '{schema.STAGE_PIPELINE}'",
                order_by=["attributes.start_time DESC"],
            )
            reused = [
                m
                for m in ("audio", "image")
                if latest.data.tags.get(schema.pipeline_reused_tag(m)) == "true"
            ]
            rows.append(
                [r + 1, first[-1], second[-1], len(after_first), len(new), ",".join(reused)]
            )
    result = Result("pipeline_reuse", "Pipeline reuse", quick=args.quick)
    command = f"tsp pipeline --seeds {seeds} --epochs {epochs}"
    command += f' --overrides "{overrides}"' if overrides else ""
    result.add_table(
        Table(
            f"`{command}` twice per round, a fresh store per round",
            [
                "round",
                "first (s)",
                "second (s)",
                "pretrain runs after first",
                "pretrain runs the second created",
                "encoders the second reused",
            ],
            rows,
        )
    )
    result.add_ratio(ratio("wall time, second pipeline / first", second, first))
    result.notes.append(
        f"Median first pipeline {np.median(first):.1f} s, second {np.median(second):.1f} s; "
        "the second differs by the pretraining it skips."
    )
    save(result, args.out)


if __name__ == "__main__":
    main()
