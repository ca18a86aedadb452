"""The tracking schema: every tag, metric, artifact and model name tsp-mlflow writes.

This module is a public API (documented in docs/tracking-schema.md) and imports nothing heavy, so
``analysis/`` can parse runs back without torch.
"""

from __future__ import annotations

from typing import NamedTuple

# --- tags -----------------------------------------------------------------------------
STAGE = "tsp.stage"
DATASET = "tsp.dataset"
MODALITY = "tsp.modality"  # supervised pretrain runs: the one modality
MODALITIES = "tsp.modalities"  # fusion and contrastive runs: comma-separated, dataset order
CONDITION = "tsp.condition"  # scratch | pretrained | <m>_scratch ...
SEED = "tsp.seed"
FUSION = "tsp.fusion"
GRADIENT = "tsp.gradient"  # fusion runs: joint | uniform | mmpareto (absent on old runs: joint)
IMPUTATION = "tsp.imputation"  # fusion runs: none | predicted (absent on old runs: none)
OBJECTIVE = "tsp.objective"  # pretrain runs: supervised | contrastive (absent: supervised)
TASK = "tsp.task"  # multiclass | multilabel | sentiment3 | sentiment_regression
HEADLINE_METRICS = "tsp.headline_metrics"  # what `analyze` compares unless told otherwise
CONFIG_HASH = "tsp.config_hash"
CODE_VERSION = "tsp.code_version"
ERROR = "tsp.error"  # why a run FAILED
STOPPED = "tsp.stopped"  # why a run was stopped early on purpose (KILLED): a pruned trial
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own nesting tag
# Experiment tag: MLflow's UI opens a "custom_model_development" experiment on its
# training-runs view instead of the GenAI (traces) one; set when a run of ours starts in an
# experiment that has no kind yet.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
PROCESS = "tsp.process"  # host:pid:start of the process that holds the run open
HEARTBEAT = "tsp.heartbeat"  # Unix seconds, refreshed while the run is open
HEARTBEAT_INTERVAL = "tsp.heartbeat_s"  # how often it is refreshed
INTERRUPTED = "tsp.interrupted"  # on a resumed run: why it had stopped (its old tsp.error)
REAPED = "tsp.reaped"  # Unix seconds: when `tsp runs reap` marked the dead run KILLED
# Under torchrun (set by rank 0, updated on a resume that used another process count).
DISTRIBUTED_WORLD_SIZE = "tsp.distributed.world_size"
DISTRIBUTED_BACKEND = "tsp.distributed.backend"
RESUMED = "tsp.resumed_from_epoch"  # set on resume: the checkpoint's epoch (0: none yet)
RESUMES = "tsp.resumes"  # on an `mlflow run` project run: the run it resumed
# `true` on a run started with --skip-train (trainer.skip_train): evaluated untrained,
# registers nothing, and analyses leave it out.
SKIP_TRAIN = "tsp.skip_train"

STAGE_PRETRAIN = "pretrain"
STAGE_MULTIMODAL = "multimodal"
STAGE_PIPELINE = "pipeline"
STAGE_ANALYSIS = "analysis"
STAGE_SWEEP = "sweep"  # an Optuna sweep's parent (its trials keep their training stage)
STAGE_MULTIRUN = "multirun"  # a Hydra multirun's parent
STAGES = (
    STAGE_PRETRAIN,
    STAGE_MULTIMODAL,
    STAGE_PIPELINE,
    STAGE_ANALYSIS,
    STAGE_SWEEP,
    STAGE_MULTIRUN,
)

CONDITION_SCRATCH = "scratch"
CONDITION_PRETRAINED = "pretrained"
CONDITION_CONTRASTIVE = "contrastive"  # every encoder from one contrastive pretrain run

GRADIENT_JOINT = "joint"
IMPUTATION_NONE = "none"
OBJECTIVE_SUPERVISED = "supervised"
OBJECTIVE_CONTRASTIVE = "contrastive"


def encoder_source_tag(modality: str) -> str:
    """``scratch``, ``run:<id>`` or ``models:/...``: where a fusion run's encoder came from."""
    return f"tsp.encoder.{modality}.source"


def finetune_tag(modality: str) -> str:
    """``finetune``, ``frozen`` or ``bitfit``: how a fusion run trained that encoder."""
    return f"tsp.finetune.{modality}"


def encoder_run_tag(modality: str) -> str:
    """The pretrain run that produced a fusion run's encoder (absent for scratch)."""
    return f"tsp.encoder.{modality}.run_id"


def pipeline_pretrain_tag(modality: str) -> str:
    """On a pipeline run: the pretrain run it used for ``modality``."""
    return f"tsp.pipeline.pretrain.{modality}.run_id"


def pipeline_reused_tag(modality: str) -> str:
    """On a pipeline run: ``true`` when that pretrain run was reused, not trained anew."""
    return f"tsp.pipeline.pretrain.{modality}.reused"


# Adaptive seeds (pipeline seeds=auto): the parent records its looks and why it stopped;
# each look is an analysis child tagged with its number.
SEEDS_LOOKS = "tsp.seeds.looks"  # seed counts at the looks taken, e.g. "5,6"
SEEDS_USED = "tsp.seeds.used"  # the most seeds any cell reached
SEEDS_STOP = "tsp.seeds.stop"  # why it stopped adding seeds (decided, futility, seeds.max)
ANALYSIS_LOOK = "tsp.analysis.look"  # on an analysis run: its look (1-based)

# Sweeps: the parent carries SWEEP_* tags; each trial is a multimodal (or pretrain) run
# nested under it with the TRIAL_* tags. The analysis of pretrained vs scratch leaves
# trials out unless asked for one parent's children: their hyperparameters differ.
SWEEP_STUDY = "tsp.sweep.study"  # the sweep's name (parent); the Optuna study (trial)
SWEEP_ROLE = "tsp.sweep.role"  # parent | worker (a joining worker's own `mlflow run` run)
SWEEP_N_TRIALS = "tsp.sweep.n_trials"  # trials per condition asked for by the last worker
TRIAL_NUMBER = "tsp.trial.number"
TRIAL_STATE = "tsp.trial.state"  # RUNNING | COMPLETE | PRUNED | FAIL (Optuna's states)
TRIAL_PARAMS = "tsp.trial.params"  # the sampled values, JSON
TRIAL_PRUNED_EPOCH = "tsp.trial.pruned_epoch"
TRIAL_WORKER = "tsp.trial.worker"  # <host>:<pid> of the worker process that ran it
MULTIRUN_JOB = "tsp.multirun.job"  # a Hydra multirun job's number
MULTIRUN_OVERRIDES = "tsp.multirun.overrides"  # the job's own overrides


def sweep_best_tag(condition: str, key: str) -> str:
    """On a sweep parent: the best trial's ``key`` (``trial``, ``value``, ``run_id`` or a
    searched parameter such as ``optim.lr``) for one condition."""
    return f"tsp.sweep.best.{condition}.{key}"


def sweep_best_metric(condition: str) -> str:
    """On a sweep parent: the best objective so far (step = finished trials)."""
    return f"sweep/{condition}/best_value"


MONITOR_PREFIX = "monitor"  # monitor/{grad_norm,weight_norm}/<group>, monitor/activation/...
GRADIENT_SPLIT = "gradient"  # gradient/<modality>/{cosine,weight_multimodal,...}: MMPareto

# --- metrics --------------------------------------------------------------------------
TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
TRAIN_F1_MACRO = "train/f1_macro"
TIME_EPOCH = "time/epoch_s"
TIME_TRAIN_TOTAL = "time/train_total_s"
TIME_TOTAL = "time/total_s"
TIME_TEST_BATCH_MS = "time/test_batch_ms"  # one full-pattern forward per test batch
PARAMS_TOTAL = "params/total"
PARAMS_TRAINABLE = "params/trainable"
BEST_EPOCH = "best/epoch"
BEST_VALUE = "best/value"  # the monitored validation metric at the best epoch


# Metrics on the split's own missing-modality masks: `{split}/observed/{metric}`. Not a
# modality pattern, so the per-pattern analysis leaves it out.
OBSERVED_PATTERN = "observed"


def missing_tag(split: str) -> str:
    """The missing rates a training run applied to ``split`` (``0.2`` or ``audio=0.9,...``)."""
    return f"tsp.missing.{split}"


class PatternMetric(NamedTuple):
    split: str
    pattern: str
    metric: str


def metric_key(split: str, pattern: str, metric: str) -> str:
    """``{split}/{pattern}/{metric}``, e.g. ``val/audio-image/accuracy``."""
    return f"{split}/{pattern}/{metric}"


def parse_metric_key(key: str) -> PatternMetric | None:
    """Inverse of :func:`metric_key`; ``None`` for keys that are not per-pattern metrics."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] not in ("train", "val", "test"):
        return None
    return PatternMetric(*parts)


# --- artifacts and registry -------------------------------------------------------------
ENCODER_ARTIFACT_DIR = "encoder"
REPRESENTATIONS_DIR = "representations"  # <modality>.npy test embeddings + targets.npy
TEST_BOOTSTRAP_ARTIFACT = "test_bootstrap.json"  # fusion runs: metrics on test resamples
CONFIG_ARTIFACT = "config.yaml"
METRICS_ARTIFACT = "metrics.json"
CHECKPOINT_DIR = "checkpoints"  # checkpoints/epoch-0003/{state.json,state.safetensors}


def checkpoint_path(epoch: int) -> str:
    return f"{CHECKPOINT_DIR}/epoch-{epoch:04d}"


ANALYSIS_DIR = "analysis"  # an analysis run's artifacts, all under this folder:
ANALYSIS_TABLE_ARTIFACT = "analysis/table.md"  # the headline table
ANALYSIS_REPORT_ARTIFACT = "analysis/report.md"  # every table, verdicts, thesis-style tables
ANALYSIS_LATEX_ARTIFACT = "analysis/report.tex"
ANALYSIS_META_ARTIFACT = "analysis/meta.json"  # selection, settings, RNG seed, versions
ANALYSIS_COMPARISON_CSV = "analysis/tables/comparison.csv"  # with run ids per row
ANALYSIS_VALUES_CSV = "analysis/inputs/values.csv"  # the exact input snapshot
ANALYSIS_FOREST_FIGURE = "analysis/figures/forest.png"
# Every training run's figures (mlflow.log_figure): learning curves, the test metric per
# pattern, and per task a confusion matrix (classification), reliability and per-label F1
# (multilabel) or predicted vs true (regression). A pipeline run: its headline comparison.
FIGURES_DIR = "figures"
LEARNING_CURVES_FIGURE = "figures/learning_curves.png"
PATTERNS_FIGURE = "figures/test_patterns.png"
CONFUSION_FIGURE = "figures/confusion_matrix.png"
MULTILABEL_FIGURE = "figures/multilabel.png"
REGRESSION_FIGURE = "figures/regression.png"
HEADLINE_FIGURE = "figures/headline.png"
SWEEP_DIR = "sweep"  # sweep/<condition>/{trials.csv, best.json, importance.*, history.png}
SENSITIVITY_DIR = "sweep/sensitivity"  # report.md, values.csv, robustness.png, landscape.png
CHAMPION_ALIAS = "champion"
MODEL_VERSION_MONITOR = "tsp.monitor"  # model version tags: which metric, and its value
MODEL_VERSION_MONITOR_VALUE = "tsp.monitor_value"
MODEL_VERSION_MONITOR_MODE = "tsp.monitor_mode"  # max | min (absent on old versions: max)


def registered_encoder_name(
    dataset: str, modality: str, objective: str = OBJECTIVE_SUPERVISED
) -> str:
    """``avdigits-audio-encoder``; contrastive encoders have their own registered model
    (``avdigits-audio-contrastive-encoder``), ranked by their own validation metric."""
    if objective == OBJECTIVE_SUPERVISED:
        return f"{dataset}-{modality}-encoder"
    return f"{dataset}-{modality}-{objective}-encoder"


def encoder_artifact_path(modality: str | None = None) -> str:
    """Where a pretrain run keeps an encoder: ``encoder`` (supervised: the one modality) or
    ``encoder/<modality>`` (contrastive: one folder per modality)."""
    return ENCODER_ARTIFACT_DIR if modality is None else f"{ENCODER_ARTIFACT_DIR}/{modality}"


def pipeline_contrastive_tag() -> str:
    """On a pipeline run: the contrastive pretrain run its ``contrastive`` cells used."""
    return "tsp.pipeline.contrastive.run_id"
