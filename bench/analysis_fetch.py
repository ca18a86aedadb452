"""Fetching and analysing N runs from a local `mlflow server`: ours vs the naive loop.

The naive loop is what a researcher writes first: search the runs, then call
``MlflowClient.get_metric_history`` once per run and key. Ours is ``analysis.data``
(bulk history requests, bounded concurrency). Both run side by side in one process
against the same server; only their ratio is meaningful on a shared machine.

    python -m bench.analysis_fetch            # 1,000 runs x 20 epochs x 3 patterns, 3 rounds
    python -m bench.analysis_fetch --quick    # 30 runs: a smoke test (CI runs it)

Target: >= 5x.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from analysis.data import (
    Selection,
    lineage_frame,
    pattern_values,
    runs_frame,
    select_runs,
)
from analysis.histories import fetch_histories
from analysis.results import AnalysisInputs, AnalysisSettings, compute_results
from analysis.synthetic import log_synthetic_pipeline
from bench.harness import Result, Table, arguments, interleave, quiet_mlflow, ratio, save
from tsp_mlflow.tracking.loopback_server import loopback_server

PATTERNS = ("audio", "image", "audio-image")
TARGET = ">= 5"


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="fusion runs to create")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    quiet_mlflow()
    runs, epochs, rounds = (30, 5, 1) if args.quick else (args.runs, args.epochs, 3)
    keys = [*(f"val/{p}/accuracy" for p in PATTERNS), "time/epoch_s"]
    result = Result("analysis_fetch", "Analysis fetch", quick=args.quick)

    with tempfile.TemporaryDirectory(prefix="tsp-bench-") as tmp, loopback_server(Path(tmp)) as url:
        client = MlflowClient(url)
        experiment_id = client.create_experiment("bench")
        start = time.perf_counter()
        log_synthetic_pipeline(
            client, experiment_id, seeds=runs // 2, epochs=epochs, metrics=("accuracy",)
        )
        print(
            f"populated {runs} runs x {epochs} epochs x {len(PATTERNS)} patterns "
            f"in {time.perf_counter() - start:.1f} s ({url})"
        )
        points: dict[str, int] = {}

        def naive() -> list[float]:
            start = time.perf_counter()
            found = _naive_search(client, experiment_id)
            points["naive"] = sum(
                len(client.get_metric_history(r.info.run_id, key)) for r in found for key in keys
            )
            return [time.perf_counter() - start]

        def ours() -> list[float]:
            start = time.perf_counter()
            found = select_runs(client, Selection((experiment_id,)))
            histories = fetch_histories(client, [r.info.run_id for r in found], keys)
            points["ours"] = len(histories)
            return [time.perf_counter() - start]

        def ours_with_analysis() -> list[float]:
            start = time.perf_counter()
            found = select_runs(client, Selection((experiment_id,)))
            histories = fetch_histories(client, [r.info.run_id for r in found], keys)
            inputs = AnalysisInputs(
                runs_frame(found), pattern_values(found), histories, lineage_frame(client, found)
            )
            compute_results(inputs, AnalysisSettings(metrics=("accuracy",)))
            return [time.perf_counter() - start]

        samples = interleave(
            {"naive": naive, "ours": ours, "ours + analysis": ours_with_analysis}, rounds
        )

    if points["naive"] != points["ours"]:
        raise SystemExit(f"the two fetches disagree: {points}")
    result.add_table(
        Table(
            f"{runs} fusion runs x {epochs} epochs x {len(keys)} metric keys from a local "
            f"`mlflow server`, {rounds} round(s)",
            ["what", "median seconds", "points"],
            [
                [
                    "naive: search + get_metric_history per run and key",
                    float(np.median(samples["naive"])),
                    points["naive"],
                ],
                [
                    "ours: search + bulk histories",
                    float(np.median(samples["ours"])),
                    points["ours"],
                ],
                [
                    "ours: fetch + the whole analysis",
                    float(np.median(samples["ours + analysis"])),
                    "",
                ],
            ],
        )
    )
    result.add_ratio(
        ratio("fetch speed-up, naive / ours", samples["naive"], samples["ours"], TARGET)
    )
    result.add_ratio(
        ratio(
            "naive fetch alone / our fetch + the whole analysis",
            samples["naive"],
            samples["ours + analysis"],
        )
    )
    save(result, args.out)


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
