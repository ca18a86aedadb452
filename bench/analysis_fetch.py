"""Fetching and analysing N runs from a local `mlflow server`: ours vs the naive loop.

The naive loop is what a researcher writes first: search the runs, then call
``MlflowClient.get_metric_history`` once per run and key. Ours is ``analysis.data``
(bulk history requests, bounded concurrency). Both run side by side in one process
against the same server; only their ratio is meaningful on a shared machine.

    python bench/analysis_fetch.py            # 1,000 runs × 20 epochs × 3 patterns
    python bench/analysis_fetch.py --quick    # 60 runs: a smoke test (CI runs it)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from analysis.data import (
    Selection,
    fetch_histories,
    lineage_frame,
    pattern_values,
    runs_frame,
    select_runs,
)
from analysis.results import AnalysisInputs, AnalysisSettings, compute_results
from analysis.synthetic import log_synthetic_pipeline
from tsp_mlflow.tracking.local_server import local_server

PATTERNS = ("audio", "image", "audio-image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="fusion runs to create")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="60 runs, 5 epochs")
    args = parser.parse_args()
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # one line per run otherwise
    runs, epochs = (60, 5) if args.quick else (args.runs, args.epochs)
    keys = [*(f"val/{p}/accuracy" for p in PATTERNS), "time/epoch_s"]

    with tempfile.TemporaryDirectory(prefix="tsp-bench-") as tmp, local_server(Path(tmp)) as url:
        client = MlflowClient(url)
        experiment_id = client.create_experiment("bench")
        start = time.perf_counter()
        log_synthetic_pipeline(client, experiment_id, seeds=runs // 2, epochs=epochs,
                               metrics=("accuracy",))  # fmt: skip
        print(f"populated {runs} runs × {epochs} epochs × {len(PATTERNS)} patterns "
              f"in {time.perf_counter() - start:.1f} s ({url})")  # fmt: skip

        start = time.perf_counter()
        naive_runs = _naive_search(client, experiment_id)
        naive_points = sum(
            len(client.get_metric_history(r.info.run_id, key)) for r in naive_runs for key in keys
        )
        naive_s = time.perf_counter() - start

        start = time.perf_counter()
        found = select_runs(client, Selection((experiment_id,)))
        histories = fetch_histories(client, [r.info.run_id for r in found], keys)
        fetch_s = time.perf_counter() - start
        inputs = AnalysisInputs(runs_frame(found), pattern_values(found), histories,
                                lineage_frame(client, found))  # fmt: skip
        compute_results(inputs, AnalysisSettings(metrics=("accuracy",)))
        total_s = time.perf_counter() - start

    assert naive_points == len(histories), (naive_points, len(histories))
    print()
    print("| what | seconds | points |")
    print("|---|---|---|")
    print(
        f"| naive: search + get_metric_history per run and key | {naive_s:.2f} | {naive_points} |"
    )
    print(f"| ours: search + bulk histories | {fetch_s:.2f} | {len(histories)} |")
    print(f"| ours: fetch + the whole analysis | {total_s:.2f} | |")
    print()
    print(f"fetch speed-up (naive / ours): {naive_s / fetch_s:.1f}x")
    print(f"fetch + analysis vs naive fetch alone: {naive_s / total_s:.1f}x")


def _naive_search(client: MlflowClient, experiment_id: str) -> list:
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], "tags.`tsp.stage` = 'multimodal'", page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return found


if __name__ == "__main__":
    main()
