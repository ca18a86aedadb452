"""Simulated tsp-mlflow runs with a known effect, logged through the real tracking schema.

For tests and benchmarks of the analysis: the runs look exactly like `pipeline` output
(tags, per-epoch pattern metrics, timings, lineage), so every code path that reads real
runs reads these, without training anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from tsp_mlflow.tracking import schema

PATTERNS = ("audio", "image", "audio-image")
METRICS = ("accuracy", "f1_macro")


def log_synthetic_pipeline(
    client: MlflowClient,
    experiment_id: str,
    *,
    seeds: int = 5,
    epochs: int = 5,
    effect: float = 0.03,
    noise: float = 0.01,
    patterns: Sequence[str] = PATTERNS,
    metrics: Sequence[str] = METRICS,
    rng_seed: int = 0,
    parent_run_id: str | None = None,
) -> dict[str, list[str]]:
    """Two pretrain runs, then ``seeds`` scratch and pretrained fusion runs each.

    Pretrained runs are ``effect`` better on every pattern and metric (plus per-seed
    shared noise and per-run ``noise``) and converge faster. Returns run ids by role.
    """
    rng = np.random.default_rng(rng_seed)
    now = int(time.time() * 1000)
    pretrain = {}
    for m in ("audio", "image"):
        tags = {schema.STAGE: schema.STAGE_PRETRAIN, schema.MODALITY: m, schema.DATASET: "avdigits"}
        run = client.create_run(
            experiment_id, tags=_parent(tags, parent_run_id), run_name=f"pretrain-{m}"
        )
        client.log_batch(
            run.info.run_id, metrics=[Metric(schema.TIME_TOTAL, 20.0 + 10 * (m == "image"), now, 0)]
        )
        client.set_terminated(run.info.run_id)
        pretrain[m] = run.info.run_id
    fusion: dict[str, list[str]] = {schema.CONDITION_SCRATCH: [], schema.CONDITION_PRETRAINED: []}
    for seed in range(seeds):
        shared = rng.normal(0, 0.02)  # what a seed does to both arms (data order, init)
        for condition in fusion:
            pretrained = condition == schema.CONDITION_PRETRAINED
            tags = {
                schema.STAGE: schema.STAGE_MULTIMODAL,
                schema.CONDITION: condition,
                schema.SEED: str(seed),
                schema.FUSION: "concat",
                schema.DATASET: "avdigits",
                schema.MODALITIES: "audio,image",
            }
            for m, run_id in pretrain.items():
                tags[schema.encoder_source_tag(m)] = f"run:{run_id}" if pretrained else "scratch"
                if pretrained:
                    tags[schema.encoder_run_tag(m)] = run_id
            run = client.create_run(
                experiment_id,
                tags=_parent(tags, parent_run_id),
                run_name=f"multimodal-{condition}-{seed}",
            )
            level = 0.7 + shared + (effect if pretrained else 0.0)
            speed = 1.5 if pretrained else 0.6  # pretrained encoders converge faster
            batch = []
            for epoch in range(1, epochs + 1):
                progress = 1 - np.exp(-speed * epoch)
                batch.append(Metric(schema.TIME_EPOCH, 2.0 + rng.normal(0, 0.05), now, epoch))
                batch.append(Metric(schema.TRAIN_LOSS, 2.3 * (1 - progress) + 0.1, now, epoch))
                for pattern in patterns:
                    for metric in metrics:
                        value = (
                            level * progress
                            - 0.1 * (pattern != patterns[-1])
                            + rng.normal(0, noise)
                        )
                        batch.append(
                            Metric(schema.metric_key("val", pattern, metric), value, now, epoch)
                        )
            for pattern in patterns:
                for metric in metrics:
                    value = level - 0.1 * (pattern != patterns[-1]) + rng.normal(0, noise)
                    batch.append(
                        Metric(schema.metric_key("test", pattern, metric), value, now, epochs)
                    )
            batch.append(Metric(schema.TIME_TOTAL, 2.0 * epochs + 1.0, now, 0))
            for i in range(0, len(batch), 1000):  # MLflow's per-call metric limit
                client.log_batch(
                    run.info.run_id,
                    metrics=batch[i : i + 1000],
                    params=[Param("optim.lr", "0.001")] if i == 0 else [],
                    tags=[RunTag("tsp.synthetic", "true")] if i == 0 else [],
                )
            client.set_terminated(run.info.run_id)
            fusion[condition].append(run.info.run_id)
    return {"pretrain": list(pretrain.values()), **fusion}


def _parent(tags: dict[str, str], parent_run_id: str | None) -> dict[str, str]:
    return {**tags, schema.PARENT_RUN_ID: parent_run_id} if parent_run_id else tags


def log_synthetic_study(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    differences: dict[str, np.ndarray],
    seeds: range,
    *,
    metric: str = "accuracy",
    base: float = 0.7,
    seed_spread: float = 0.05,
    rng_seed: int = 0,
) -> None:
    """Scratch and pretrained fusion runs for ``seeds``, children of ``parent_run_id``:
    per seed, pretrained = scratch + ``differences[pattern][seed]`` on the test split.

    The sequential end-to-end test logs a study look by look with this, so the analysis
    reads exactly the differences a simulation drew. A seed's scratch level is random
    (what a seed does to both arms); only the differences matter to a paired analysis.
    """
    now = int(time.time() * 1000)
    for seed in seeds:
        level = base + np.random.default_rng([rng_seed, seed]).normal(0, seed_spread)
        for condition in (schema.CONDITION_SCRATCH, schema.CONDITION_PRETRAINED):
            tags = {
                schema.STAGE: schema.STAGE_MULTIMODAL,
                schema.CONDITION: condition,
                schema.SEED: str(seed),
                schema.FUSION: "concat",
                schema.DATASET: "avdigits",
                schema.MODALITIES: "audio,image",
                schema.HEADLINE_METRICS: metric,
                schema.PARENT_RUN_ID: parent_run_id,
                "tsp.synthetic": "true",
            }
            run = client.create_run(experiment_id, tags=tags, run_name=f"{condition}-{seed}")
            batch = [Metric(schema.TIME_TOTAL, 10.0, now, 0)]
            for pattern, diffs in differences.items():
                shift = float(diffs[seed]) if condition == schema.CONDITION_PRETRAINED else 0.0
                batch.append(
                    Metric(schema.metric_key("test", pattern, metric), level + shift, now, 1)
                )
            client.log_batch(run.info.run_id, metrics=batch)
            client.set_terminated(run.info.run_id)
