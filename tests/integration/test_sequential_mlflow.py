"""The adaptive-seed rule end to end through MLflow: studies logged look by look in the
real schema, analysed by `analyze` from the parent run, decide as the simulator does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlflow import MlflowClient

from analysis.analyze import analyze
from analysis.results import AnalysisSettings
from analysis.stats.sequential import (
    UNDECIDED,
    SequentialDesign,
    critical_values,
    interval_decision,
)
from analysis.synthetic import log_synthetic_study
from tsp_mlflow.recipes.looks import decide_strata
from tsp_mlflow.tracking import schema

pytestmark = pytest.mark.integration
DESIGN = SequentialDesign(max=10)  # looks at 5..10 seeds: a short study
PATTERNS = ("audio", "image", "audio-image")
VERDICTS = {1: "pretrained better", -1: "scratch better", 2: "equivalent", 0: "inconclusive"}


def expected(d: dict[str, np.ndarray], n: int, rope: float) -> dict[str, str]:
    """The simulator's rule on the same differences, by hand."""
    crits = critical_values(DESIGN.looks_until(n), 0.05 / 3, DESIGN.spending, DESIGN.max)
    out = {}
    for pattern, values in d.items():
        decision = UNDECIDED
        for look, c in zip(DESIGN.looks_until(n), crits, strict=True):
            part = values[:look]
            half = c * part.std(ddof=1) / math.sqrt(look)
            decision = interval_decision(part.mean() - half, part.mean() + half, rope)
            if decision != UNDECIDED:
                break
        out[pattern] = VERDICTS[int(decision)]
    return out


@pytest.mark.parametrize(("effect", "spread"), [(0.0, 0.01), (0.03, 0.01), (0.012, 0.01)])
def test_a_study_logged_look_by_look_decides_like_the_simulator(
    tracking_uri: str, effect: float, spread: float
) -> None:
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("avdigits")
    rng = np.random.default_rng(int(effect * 1000))
    d = {p: rng.normal(effect if p == "audio-image" else 0.0, spread, DESIGN.max) for p in PATTERNS}
    parent = client.create_run(experiment, tags={schema.STAGE: schema.STAGE_PIPELINE})
    for key, value in {
        "pipeline.seeds": "auto",
        "pipeline.seeds.min": DESIGN.min,
        "pipeline.seeds.step": DESIGN.step,
        "pipeline.seeds.max": DESIGN.max,
        "pipeline.seeds.spending": DESIGN.spending,
        "pipeline.seeds.futility": DESIGN.futility,
    }.items():
        client.log_param(parent.info.run_id, key, value)
    settings = AnalysisSettings(rope=0.005)
    logged = 0
    for look, n in enumerate(DESIGN.looks, start=1):
        log_synthetic_study(client, experiment, parent.info.run_id, d, range(logged, n))
        logged = n
        # the design is read back from the parent's params, as `tsp analyze` would
        result = analyze(parent_run=parent.info.run_id, settings=settings, log=False)
        table = result.results.comparison.set_index("pattern")
        assert result.results.design == DESIGN
        assert (table["look"] == look).all() and (table["n_pairs"] == n).all()
        assert table["verdict"].to_dict() == expected(d, n, 0.005)
        stop = decide_strata(
            result.results.comparison,
            "audio-image",
            [("concat", "0", "joint", "none")],
            DESIGN,
            last_look=n == DESIGN.max,
        ).stops
        if next(iter(stop.values())) is not None:
            break
    if effect == 0.0:
        assert not table["verdict"].str.endswith("better").any()
    if effect == 0.03:  # three sds: decided at the first look
        assert table.loc["audio-image", "verdict"] == "pretrained better" and look == 1
