"""Adaptive seeds: the mean seeds a ``seeds=auto`` study uses, against the fixed design
of equal power for the same effect.

Both designs run side by side on the same simulated differences (in sd units of the
paired differences): a family of six rows (3 patterns × 2 metrics, avdigits' headline
family) whose two full-pattern rows (accuracy and F1, correlation 0.9) carry the effect
Δ and stop the study; the other four are null. For each Δ the sequential rule's power
(deciding the right direction) is measured, and the fixed design is the smallest n whose
power at the same per-row level reaches it. The ratio is mean seeds used / that n; the
interval bootstraps the simulated studies (the fixed n is recomputed per resample).

    python -m bench.sequential_seeds            # 20,000 studies per effect (~1 min)
    python -m bench.sequential_seeds --quick    # 500 per effect
"""

from __future__ import annotations

import numpy as np

from analysis.stats.sequential import SequentialDesign
from analysis.stats.simulate import fixed_seeds_for, simulate
from bench.harness import Ratio, Result, Table, arguments, save

EFFECTS = (0.5, 1.0, 2.0)
ROWS = 6
TARGET = "<= 0.7"


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    reps = 500 if args.quick else 20_000
    design = SequentialDesign()
    alpha_row = 0.05 / ROWS
    rng = np.random.default_rng(0)
    rows, per_effect, boots = [], [], []
    for delta in EFFECTS:
        sim = simulate(
            design,
            [delta, delta] + [0.0] * (ROWS - 2),
            reps=reps,
            headline=(0, 1),
            corr=0.9,
            seed=int(delta * 100),
        )
        power = sim.power(0)
        fixed = fixed_seeds_for(power, delta, alpha_row)
        mean = float(sim.stop_n.mean())
        per_effect.append(mean / fixed)
        right = sim.decisions[:, 0] == 1
        draws = []
        for _ in range(200 if args.quick else 1000):
            pick = rng.integers(0, reps, reps)
            draws.append(
                sim.stop_n[pick].mean() / fixed_seeds_for(right[pick].mean(), delta, alpha_row)
            )
        boots.append(np.array(draws))
        rows.append(
            [
                delta,
                f"{power:.3f}",
                f"{mean:.2f}",
                fixed,
                f"{mean / fixed:.3f}",
                f"{np.median(sim.stop_n):.0f}",
                f"{(sim.stop_n == design.max).mean():.3f}",
            ]
        )
    result = Result("sequential_seeds", "Adaptive seeds vs a fixed design", quick=args.quick)
    result.add_table(
        Table(
            f"{reps:,} simulated studies per effect; {design.describe()}, futility "
            f"{design.futility:g}; six rows, Bonferroni",
            [
                "Δ (sd)",
                "power",
                "mean seeds",
                "fixed design, equal power",
                "ratio",
                "median seeds",
                "share at max",
            ],
            rows,
        )
    )
    for delta, value, draws in zip(EFFECTS, per_effect, boots, strict=True):
        low, high = np.quantile(draws, [0.025, 0.975])
        result.add_ratio(
            Ratio(f"seeds used / fixed design, Δ = {delta:g} sd", value, float(low), float(high))
        )
    mean_draws = np.mean(boots, axis=0)
    low, high = np.quantile(mean_draws, [0.025, 0.975])
    result.add_ratio(
        Ratio(
            "seeds used / fixed design, mean over Δ = 0.5, 1, 2 sd",
            float(np.mean(per_effect)),
            float(low),
            float(high),
            TARGET,
        )
    )
    result.notes.append(
        "Power is the share of studies that decided the first full-pattern row in the right "
        "direction; a study stops when both full-pattern rows are decided, or when the "
        "plug-in chance of deciding them by 20 seeds is below the futility threshold."
    )
    save(result, args.out)


if __name__ == "__main__":
    main()
