"""Run every benchmark, each in its own process: ``python -m bench [--quick] [--out DIR]``.

Full runs (about 25 minutes on 2 cores) write ``bench/results/*.json`` and re-render
``docs/benchmarks.md``; ``--quick`` writes into one temporary folder (or ``--out``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from bench.harness import arguments

BENCHMARKS = (
    "tracking_overhead",
    "framework_overhead",
    "pattern_eval",
    "pipeline_reuse",
    "analysis_fetch",
    "data",
    "profile_epoch",
    "sequential_seeds",
)


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"which benchmarks (default: all): {', '.join(BENCHMARKS)}",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    out = args.out or (tempfile.mkdtemp(prefix="tsp-bench-") if args.quick else None)
    extra = [*(["--quick"] if args.quick else []), *(["--out", str(out)] if out else [])]
    failed = []
    for name in args.names or BENCHMARKS:
        print(f"\n=== bench.{name} ===", flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.{name}", *extra], env=os.environ)
        if done.returncode != 0:
            failed.append(name)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
