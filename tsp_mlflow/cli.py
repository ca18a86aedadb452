"""``tsp <command>`` and ``python -m tsp_mlflow <command>``: the MLproject entry points.

Each command parses its parameters, composes and validates the config, then runs its
recipe. Parameter names are a public contract shared with ``MLproject``.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tsp_mlflow.errors import TrackingServerLost, TrainingDiverged, UserInputError
from tsp_mlflow.tracking.schema import STAGES

EPOCHS_HELP = "epochs (positive integer); empty keeps the config's trainer.epochs"
OVERRIDES_HELP = "Hydra overrides, space-separated, e.g. 'optim.lr=1e-3 debug=tiny'"


def _optional_int(name: str, text: str | None) -> int | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UserInputError(f"{name} must be an integer, got {text!r}") from None
    if value <= 0:
        raise UserInputError(f"{name} must be a positive integer, got {value}; e.g. -P {name}=10")
    return value


def _stage_overrides(dataset: str, epochs: str | None, overrides: str, *params: str) -> list[str]:
    """Entry-point parameters as Hydra overrides; the user's ``overrides`` come last and win."""
    from tsp_mlflow.config import split_overrides

    n = _optional_int("epochs", epochs)
    return [
        f"data={dataset}",
        *params,
        *([f"trainer.epochs={n}"] if n else []),
        *split_overrides(overrides),
    ]


def _check_dataset(dataset: str) -> None:
    from tsp_mlflow.config import group_options

    options = group_options("data")
    if dataset not in options:
        raise UserInputError(
            f"unknown dataset {dataset!r} (-P dataset); choose one of {', '.join(options)}"
        )


RESUME_HELP = (
    "an interrupted run's id: continue that same run from its last checkpoint (give the "
    "same other arguments as when it started)"
)


def _mark_project_run_as_resuming(run_id: str) -> None:
    """Under `mlflow run`, the project run MLflow created only launches the resume: say so
    on it, so the UI points to the run that was continued. It is then let go (MLflow
    would otherwise take it for the first nested run we start)."""
    pending = os.environ.pop("MLFLOW_RUN_ID", None)
    if pending and pending != run_id:
        from mlflow import MlflowClient

        from tsp_mlflow.tracking import schema

        client = MlflowClient()
        client.set_tag(pending, schema.RESUMES, run_id)
        client.set_tag(
            pending, "mlflow.note.content", f"Resumed run {run_id}; its metrics are there."
        )


def _run_or_resume(recipe: Any, resume: str, experiment: str) -> str:
    """Run a training recipe: anew in ``experiment``, or continuing run ``resume`` (whose
    experiment is fixed already)."""
    from tsp_mlflow.tracking.session import use_experiment
    from tsp_mlflow.training.distributed import is_main_process

    if resume and is_main_process():  # rank 0 alone: it claims the run for every rank
        recipe.check_resume(resume)  # fails fast; run() checks again just before reopening
        _mark_project_run_as_resuming(resume)
    elif is_main_process():  # under torchrun the other ranks open no run
        use_experiment(experiment, when_a_run_starts=True)
    return str(recipe.run(resume=resume or None))


def _print_plan(plan: Any, recipe: Any, resume: str) -> None:
    """``--dry-run`` of one training run: a resumed run's settings are checked too."""
    if resume:
        recipe.check_resume(resume)
    _echo(plan(recipe) + (f"\n  resumes     run {resume}" if resume else ""))


def _echo(message: str) -> None:
    """A command's closing line, printed once under torchrun (by rank 0)."""
    from tsp_mlflow.training.distributed import is_main_process

    if is_main_process():
        click.echo(message)


def _start() -> str:
    from tsp_mlflow.tracking.session import configure_tracking
    from tsp_mlflow.training.distributed import init_distributed, main_first

    init_distributed()  # under torchrun: join the other ranks
    with main_first():
        return configure_tracking()


DISTRIBUTED_COMMANDS = ("pretrain", "multimodal")  # what torchrun may launch


@dataclass
class RunFlags:
    """The thesis tool's switches, given before the command (``tsp --dry-run pretrain``)
    or after it (``tsp pretrain --dry-run``)."""

    dry_run: bool = False
    skip_train: bool = False
    skip_test: bool = False
    disable_monitoring: bool = False
    system_metrics: bool = False
    typed: set[str] = field(default_factory=set)  # given on the command line
    from_environment: set[str] = field(default_factory=set)  # TSP_DRY_RUN=1 ...

    def overrides(self) -> list[str]:
        """As config overrides (conf/trainer/, conf/monitoring/); the user's own come later."""
        return [
            *(["trainer.skip_train=true"] if self.skip_train else []),
            *(["trainer.skip_test=true"] if self.skip_test else []),
            *(["monitoring.enabled=false"] if self.disable_monitoring else []),
            *(["monitoring.system_metrics=true"] if self.system_metrics else []),
        ]


FLAG_HELP = {
    "dry_run": "check everything the command needs (config, data, encoder sources, "
               "settings) and print what it would do; create no run",
    "skip_train": "no training: evaluate the model as built (e.g. pretrained encoders with an "
                  "untrained fusion and head); registers nothing, analyses leave the run out",
    "skip_test": "train and validate only; no test metrics",
    "disable_monitoring": "no gradient/weight/activation statistics, no system metrics",
    "system_metrics": "log MLflow's system metrics (CPU, memory, disk, network; GPU when "
                      "present) under system/ while training",
}  # fmt: skip


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value and param.name:
        given = ctx.find_root().ensure_object(RunFlags)
        if ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT:
            given.from_environment.add(param.name)
        else:
            given.typed.add(param.name)
        setattr(given, param.name, True)
    return value


def run_flags(*names: str) -> Any:
    """Add these of :class:`RunFlags` to a command (all of them: the ``tsp`` group)."""

    def decorate(command: Any) -> Any:
        for name in reversed(names or tuple(FLAG_HELP)):
            command = click.option(
                f"--{name.replace('_', '-')}", name, is_flag=True, expose_value=False,
                callback=_set_flag, help=FLAG_HELP[name], envvar=f"TSP_{name.upper()}",
            )(command)  # fmt: skip
        return command

    return decorate


def flags(command: str = "", *, supported: tuple[str, ...] = tuple(FLAG_HELP)) -> RunFlags:
    """The flags given; one that ``command`` does not support is refused by name when typed,
    and ignored when it comes from the environment (``TSP_DRY_RUN=1`` for a whole script)."""
    ctx = click.get_current_context(silent=True)
    given = ctx.find_root().ensure_object(RunFlags) if ctx else RunFlags()
    for name in FLAG_HELP:
        if getattr(given, name) and name not in supported:
            if name not in given.typed:
                setattr(given, name, False)
                continue
            raise UserInputError(
                f"--{name.replace('_', '-')} does not apply to tsp {command}; it applies to "
                f"{FLAG_USERS[name]}"
            )
    if given.disable_monitoring and given.system_metrics:
        raise UserInputError(
            "--disable-monitoring turns system metrics off too; drop one of it and --system-metrics"
        )
    return given


FLAG_USERS = {
    "dry_run": "pretrain, multimodal, pipeline, sweep, analyze, sensitivity, runs reap, server, ui",
    "skip_train": "pretrain and multimodal",
    "skip_test": "pretrain, multimodal, pipeline (then analysed on val) and sweep",
    "disable_monitoring": "pretrain, multimodal, pipeline and sweep",
    "system_metrics": "pretrain, multimodal, pipeline and sweep",
}


# The switches a command that trains many runs passes on to each of them.
ON_TRAINING_RUNS = ("dry_run", "skip_test", "disable_monitoring", "system_metrics")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@run_flags()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """tsp-mlflow: does task-specific pretraining of each encoder help late fusion?

    \b
    Examples:
      tsp pipeline --seeds 2 --epochs 1 --overrides "debug=tiny"   # the whole study, small
      tsp --dry-run multimodal --encoders pretrained     # check everything, train nothing
      tsp --skip-train multimodal --epochs 1             # evaluate an untrained model
      tsp --system-metrics pretrain --modality audio --epochs 2   # CPU/memory/GPU too
      tsp runs --stage pipeline                          # what the store holds
      tsp data check avdigits
    Each switch can also be set in the environment: TSP_DRY_RUN=1, TSP_SKIP_TEST=1, ...
    Multi-process training (DDP; gloo on CPU, nccl on CUDA):
      torchrun --nproc_per_node=2 -m tsp_mlflow multimodal --encoders pretrained
    """
    from tsp_mlflow.training.distributed import launched

    command = ctx.invoked_subcommand
    if launched().enabled and command not in DISTRIBUTED_COMMANDS:
        raise UserInputError(
            f"tsp {command} runs in one process; torchrun launches "
            f"{' and '.join(DISTRIBUTED_COMMANDS)} (e.g. torchrun --nproc_per_node=2 -m "
            "tsp_mlflow multimodal ...)"
        )


@cli.command()
@run_flags()
@click.option("--dataset", default="avdigits", show_default=True)
@click.option("--modality", default="",
              help="supervised: the modality whose encoder to pretrain; contrastive: the "
                   "modalities, comma-separated (empty or 'all': every one)")  # fmt: skip
@click.option("--objective", default="supervised", show_default=True,
              help="supervised (the modality's own labels) | contrastive (paired, label-free)")  # fmt: skip
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
@click.option("--resume", default="", help=RESUME_HELP)
def pretrain(
    dataset: str,
    modality: str,
    objective: str,
    epochs: str,
    seed: int,
    overrides: str,
    resume: str,
) -> None:
    """Pretrain one modality's encoder and register it as <dataset>-<modality>-encoder;
    or, contrastively, several encoders at once, each registered as
    <dataset>-<modality>-contrastive-encoder.

    \b
    Examples:
      tsp pretrain --modality audio --epochs 5
      tsp pretrain --modality audio --epochs 5 --resume <run id>   # after a crash
      tsp pretrain --objective contrastive --epochs 2 --overrides "debug=tiny"   # all modalities
      tsp pretrain --modality image --dry-run                       # the plan only
    """
    from tsp_mlflow.config import compose_config, group_options, quote
    from tsp_mlflow.recipes.contrastive import ContrastivePretrainRecipe
    from tsp_mlflow.recipes.pretrain import make_pretrain_recipe
    from tsp_mlflow.training.distributed import is_main_process

    _check_dataset(dataset)
    if objective not in group_options("objective"):
        raise UserInputError(
            f"unknown objective {objective!r} (-P objective); choose one of "
            f"{', '.join(group_options('objective'))}"
        )
    given = flags("pretrain")
    params = [f"objective={objective}", f"seed={seed}", *given.overrides()]
    if objective == "supervised":
        if not modality.strip():
            raise UserInputError(
                f"give the modality to pretrain, e.g. -P modality=audio (dataset {dataset!r})"
            )
        params.append(f"modality={quote(modality)}")
    elif modality.strip() and modality.strip() != "all":
        params.append(f"objective.modalities=[{modality.strip()}]")
    cfg, _ = compose_config("pretrain", _stage_overrides(dataset, epochs, overrides, *params))
    recipe = make_pretrain_recipe(cfg)
    _start()
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_pretrain

        _print_plan(plan_pretrain, recipe, resume)
        return
    run_id = _run_or_resume(recipe, resume, cfg.tracking.experiment)
    if not is_main_process():
        return
    if cfg.trainer.skip_train:
        click.echo(f"pretrain run {run_id} finished (--skip-train: evaluated untrained; "
                   "nothing registered)")  # fmt: skip
        return
    if isinstance(recipe, ContrastivePretrainRecipe):
        summaries = [
            registry_summary(cfg.data.name, m, run_id, objective) for m in recipe.modalities
        ]
        click.echo(f"pretrain run {run_id} finished; " + "; ".join(summaries))
        return
    click.echo(
        f"pretrain run {run_id} finished; {registry_summary(cfg.data.name, modality, run_id)}"
    )


@cli.command()
@run_flags()
@click.option("--dataset", default="avdigits", show_default=True)
@click.option("--encoders", default="scratch", show_default=True,
              help="scratch | pretrained | contrastive | <modality>=<scratch|pretrained|URI>,...")  # fmt: skip
@click.option("--fusion", default="concat", show_default=True)
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
@click.option("--resume", default="", help=RESUME_HELP)
def multimodal(
    dataset: str, encoders: str, fusion: str, epochs: str, seed: int, overrides: str, resume: str
) -> None:
    """Train a late-fusion model and evaluate every modality pattern.

    \b
    Examples:
      tsp multimodal --encoders pretrained --fusion gated --epochs 5
      tsp multimodal --encoders audio=scratch,image=pretrained --seed 3
      tsp multimodal --overrides "gradient=mmpareto"       # unimodal losses, MMPareto
      tsp multimodal --overrides "imputation=predicted missing.train=0.5"
      tsp multimodal --encoders contrastive                # contrastive pretrained encoders
      tsp multimodal --encoders pretrained --fusion gated --epochs 5 --resume <run id>
                                                   # after a crash: same arguments + --resume
      tsp multimodal --encoders pretrained --skip-train     # pretrained encoders, untrained fusion
      tsp multimodal --encoders pretrained --dry-run        # resolve the encoders, train nothing
    """
    from tsp_mlflow.config import compose_config, group_options, quote
    from tsp_mlflow.recipes.multimodal import MultimodalRecipe, encoders_of_run

    _check_dataset(dataset)
    if fusion not in group_options("model/fusion"):
        raise UserInputError(
            f"unknown fusion {fusion!r} (-P fusion); choose one of {', '.join(group_options('model/fusion'))}"
        )
    _start()  # encoder URIs are resolved against the tracking server while validating
    if resume:  # the exact encoder runs it used, wherever `pretrained` points now
        encoders = encoders_of_run(resume, given=encoders) or encoders
    given = flags("multimodal")
    params = (f"model/fusion={fusion}", f"encoders={quote(encoders)}", f"seed={seed}",
              *given.overrides())  # fmt: skip
    stage = _stage_overrides(dataset, epochs, overrides, *params)
    cfg, choices = compose_config("multimodal", stage)
    recipe = MultimodalRecipe(cfg, fusion_name=choices["model/fusion"])
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_multimodal

        _print_plan(plan_multimodal, recipe, resume)
        return
    run_id = _run_or_resume(recipe, resume, cfg.tracking.experiment)
    _echo(f"multimodal run {run_id} finished (condition {recipe.condition})")


@cli.command()
@run_flags(*ON_TRAINING_RUNS)
@click.option("--dataset", default="avdigits", show_default=True)
@click.option(
    "--seeds", default="auto", show_default=True,
    help="fusion runs per condition: N (fixed), or auto (adaptive: add seeds until decided)",
)  # fmt: skip
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
@click.option(
    "--resume", default="", help="a pipeline run id: finish its grid, skipping finished cells"
)
def pipeline(dataset: str, seeds: str, epochs: str, overrides: str, resume: str) -> None:
    """Pretrain, train the grid of fusion models (conf/grid/) over seeds, then analyse.

    \b
    Examples:
      tsp pipeline                       # seeds=auto: adds seeds until the verdicts are decided
      tsp pipeline --seeds 5             # a fixed design: 5 seeds per condition
      tsp pipeline --seeds 2 --epochs 1 --overrides "grid=fusions"      # 6 fusion methods
      tsp pipeline --overrides "grid=missing grid.conditions=[scratch,audio_scratch] analysis.a=audio_scratch"
      tsp pipeline --resume <pipeline run id> --seeds 2 --epochs 1 --overrides "debug=tiny"
                                              # after a crash: the same arguments, plus --resume
      tsp pipeline --seeds 5 --overrides "grid=fusions" --dry-run      # the 60 runs it would train
    """
    from tsp_mlflow.config import split_overrides
    from tsp_mlflow.recipes.looks import parse_seeds
    from tsp_mlflow.recipes.pipeline import PipelineRecipe
    from tsp_mlflow.tracking.session import use_experiment

    _check_dataset(dataset)
    parse_seeds(seeds)  # before anything touches the store
    given = flags("pipeline", supported=ON_TRAINING_RUNS)
    # Without test metrics the closing analysis compares the validation split.
    switches = [*given.overrides(), *(["analysis.split=val"] if given.skip_test else [])]
    uri = _start()
    recipe = PipelineRecipe(
        dataset, seeds, _optional_int("epochs", epochs), [*switches, *split_overrides(overrides)],
        resume=resume,
    )  # fmt: skip
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_pipeline

        click.echo(plan_pipeline(recipe) + (f"\n  resumes      run {resume} (its finished "
                                            "runs are kept)" if resume else ""))  # fmt: skip
        return
    if resume:  # the run's experiment is fixed already
        _mark_project_run_as_resuming(resume)
    else:
        use_experiment(recipe.cfg.tracking.experiment)
    result = recipe.run()
    click.echo("")
    click.echo(f"Pretrained vs scratch on {dataset} (pipeline run {result.run_id}):")
    click.echo(result.analysis.markdown)
    from analysis.report import verdict_lines
    from tsp_mlflow.tracking.schema import ANALYSIS_REPORT_ARTIFACT

    click.echo("\n".join(verdict_lines(result.analysis.results)))
    from analysis.report import left_out_lines

    for line in left_out_lines(result.analysis.results):
        click.echo(line)
    if result.looks:
        click.echo(f"Adaptive seeds: looks at {', '.join(map(str, result.looks))} seeds; "
                   f"stopped: {result.stop_reason}")  # fmt: skip
    click.echo(
        f"\nFull report: artifact {ANALYSIS_REPORT_ARTIFACT} of the analysis run {result.analysis.run_id}"
    )
    click.echo(where_to_look(uri))


@cli.command()
@run_flags(*ON_TRAINING_RUNS)
@click.option("--dataset", default="avdigits", show_default=True)
@click.option("--trials", default="", help="trials per condition over all workers; empty: sweep.n_trials")  # fmt: skip
@click.option("--study", default="", help="the study's name; the same name joins or resumes it "
              "(empty: <dataset>-<sweep option>)")  # fmt: skip
@click.option("--storage", default="",
              help="Optuna RDB URL the workers share (empty: $TSP_SWEEP_STORAGE, else optuna.db beside mlflow.db)")  # fmt: skip
@click.option("--epochs", default="", help=EPOCHS_HELP)
@click.option("--overrides", default="", help=OVERRIDES_HELP + "; sweep syntax adds a dimension")
def sweep(dataset: str, trials: str, study: str, storage: str, epochs: str, overrides: str) -> None:
    """Optuna search over a conf/sweep/ space; every trial a run nested under one parent.

    \b
    Examples:
      tsp sweep --trials 20                                   # TPE + median pruning
      tsp sweep --trials 30 --overrides "sweep.conditions=[pretrained]"
      tsp sweep --overrides "optim.lr='tag(log, interval(1e-5, 1e-1))' model/fusion=gated"
      tsp sweep --overrides "sweep=sensitivity" --epochs 5    # lr x batch, scratch vs pretrained
      tsp sweep --overrides "sweep=pretrain modality=audio"   # tune one encoder's pretraining
      TSP_SWEEP_STORAGE=postgresql+psycopg2://me@db/optuna tsp sweep --study big   # each worker
      tsp sweep --trials 20 --dry-run                         # the study and space, no trial
    """
    from tsp_mlflow.config import split_overrides
    from tsp_mlflow.recipes.sweep import SweepRecipe
    from tsp_mlflow.tracking.session import use_experiment

    _check_dataset(dataset)
    given = flags("sweep", supported=ON_TRAINING_RUNS)
    uri = _start()  # pretrained conditions resolve encoder runs against the tracking store
    recipe = SweepRecipe(
        dataset, _optional_int("epochs", epochs), [*given.overrides(), *split_overrides(overrides)],
        n_trials=_optional_int("trials", trials), study=study or None, storage=storage or None,
    )  # fmt: skip
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_sweep

        click.echo(plan_sweep(recipe))
        return
    use_experiment(recipe.cfg.tracking.experiment)
    result = recipe.run()
    click.echo("")
    for arm, best in result.best.items():
        if best is None:
            click.echo(f"{arm}: no complete trial yet")
            continue
        shown = " ".join(f"{k}={v}" for k, v in best.params.items())
        click.echo(
            f"{arm}: best {best.value:.4g} ({recipe.direction}) at trial {best.number}: {shown}"
        )
    state = "finished" if result.finished else "still running on other workers"
    click.echo(f"sweep run {result.run_id} ({state}); artifacts under sweep/ on that run")
    click.echo(where_to_look(uri))


@cli.command("sensitivity")
@run_flags("dry_run")
@click.argument("sweep_run")
@click.option("--metric", default="", help="a metric of the trial runs; empty: best/value (the objective)")  # fmt: skip
@click.option("--reference", default="", help="the condition others are compared with (empty: scratch)")  # fmt: skip
@click.option("--confidence", type=float, default=0.95, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="RNG seed for bootstraps")  # fmt: skip
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="also write the report, values and figures into this folder")  # fmt: skip
@click.option("--no-log", is_flag=True, help="print only; log nothing to the sweep run")
def sensitivity_command(
    sweep_run: str, metric: str, reference: str, confidence: float, seed: int,
    output: Path | None, no_log: bool,
) -> None:  # fmt: skip
    """How sensitive is each condition to its hyperparameters? From a sweep's trials.

    \b
    Examples:
      tsp sensitivity <sweep run id>
      tsp sensitivity <sweep run id> --metric test/audio-image/accuracy --no-log --output report/
      tsp sensitivity <sweep run id> --dry-run     # = --no-log: print the report only
    """
    import tempfile

    import mlflow

    from analysis.sensitivity import sensitivity_report
    from tsp_mlflow.tracking import schema
    from tsp_mlflow.tracking.session import tracked_run

    no_log = flags("sensitivity", supported=("dry_run",)).dry_run or no_log
    uri = _start()
    settings = dict(metric=metric or None, reference=reference or None, confidence=confidence,
                    seed=seed)  # fmt: skip
    if no_log or not os.environ.get("MLFLOW_RUN_ID"):
        report = sensitivity_report(sweep_run, **settings, folder=output, log=not no_log)
    else:  # under `mlflow run`: its run holds the report, nested under the sweep
        tags = {schema.STAGE: schema.STAGE_ANALYSIS, schema.PARENT_RUN_ID: sweep_run}
        with tracked_run(run_name="sensitivity", tags=tags), tempfile.TemporaryDirectory() as tmp:
            report = sensitivity_report(sweep_run, **settings, folder=output or Path(tmp))
            mlflow.log_artifacts(str(report.folder), schema.SENSITIVITY_DIR)
    click.echo(report.markdown)
    if output:
        click.echo(f"report written to {output}")
    click.echo(where_to_look(uri))


@cli.group()
def data() -> None:
    """Inspect datasets."""


@data.command("check")
@click.argument("dataset")
@click.argument("root", required=False)
@click.option("--overrides", default="", help=OVERRIDES_HELP)
def data_check(dataset: str, root: str | None, overrides: str) -> None:
    """Validate DATASET's files under ROOT: layout, rows, shapes, label balance, digests.

    \b
    Examples:
      tsp data check avmnist /data/avmnist
      tsp data check mmimdb /data/mmimdb/multimodal_imdb.hdf5
      tsp data check mosi_mmsa /data/MOSI/aligned_50.pkl
      tsp data check avdigits
    """
    from tsp_mlflow.config import split_overrides
    from tsp_mlflow.recipes.data_check import check_dataset

    flags("data check", supported=("dry_run",))  # it only reads: a dry run is the same
    _check_dataset(dataset)
    click.echo(check_dataset(dataset, root, split_overrides(overrides)))


@cli.group(invoke_without_command=True)
@click.option("--experiment", "experiments", multiple=True,
              help="an experiment name or id (repeatable); default: every active experiment")  # fmt: skip
@click.option("--stage", type=click.Choice(STAGES), default=None,
              help="only runs of this stage")  # fmt: skip
@click.option("--parent-run", default="", help="only this run's children (a pipeline's, a sweep's)")
@click.option("--condition", default="", help="only fusion runs of this condition, e.g. pretrained")
@click.option("--status", type=click.Choice(["RUNNING", "FINISHED", "FAILED", "KILLED"]),
              default=None)  # fmt: skip
@click.option("--filter", "filter_string", default="",
              help="an MLflow search filter ANDed to the rest, e.g. 'tags.`tsp.fusion` = \"gated\"'")  # fmt: skip
@click.option("--max-results", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--ids", "-q", "ids_only", is_flag=True,
              help="print the run ids alone, one per line (for scripts: $(tsp runs -q ...))")  # fmt: skip
@click.pass_context
def runs(
    ctx: click.Context, experiments: tuple[str, ...], stage: str | None, parent_run: str,
    condition: str, status: str | None, filter_string: str, max_results: int, ids_only: bool,
) -> None:  # fmt: skip
    """List pipelines, encoders and fusion runs as a table (newest first); inspect and
    repair runs in the tracking store.

    \b
    Examples:
      tsp runs
      tsp runs --stage pipeline
      tsp runs --stage multimodal --condition pretrained --status FINISHED
      tsp runs --parent-run <pipeline run id>
      tsp runs --stage pipeline --max-results 1 --ids     # the newest pipeline's id
      tsp runs --filter 'tags.`tsp.fusion` = "concat"' --max-results 10
      tsp runs reap --dry-run
    """
    if ctx.invoked_subcommand is not None:
        return
    from tsp_mlflow.tracking.listing import list_runs, runs_table

    flags("runs", supported=())
    uri = _start()
    found = list_runs(experiments, stage=stage, parent_run=parent_run or None,
                      condition=condition or None, status=status,
                      filter_string=filter_string, max_results=max_results)  # fmt: skip
    if ids_only:
        click.echo("\n".join(r.info.run_id for r in found) or None, nl=bool(found))
        return
    runs_table(found, uri)


@runs.command("reap")
@click.option("--experiment", "experiments", multiple=True,
              help="an experiment name (repeatable); default: every active experiment")  # fmt: skip
@click.option("--stale-after", type=float, default=None,
              help="seconds without a heartbeat after which a run on another host counts as "
              "dead (default 300); runs on this host are checked by their process")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="list the dead runs, change nothing")
def runs_reap(experiments: tuple[str, ...], stale_after: float | None, dry_run: bool) -> None:
    """Mark runs left RUNNING by a dead process (SIGKILL, out of memory, a lost machine)
    as KILLED, with the reason in tsp.error. Resume them with --resume <run id>.

    \b
    Examples:
      tsp runs reap
      tsp runs reap --experiment avdigits --dry-run
      tsp runs reap --stale-after 120
    """
    from mlflow import MlflowClient

    from tsp_mlflow.tracking import schema
    from tsp_mlflow.tracking.liveness import STALE_AFTER_SECONDS, reap, resume_hint

    dry_run = flags("runs reap", supported=("dry_run",)).dry_run or dry_run
    _start()
    ids = None
    if experiments:
        ids = []
        for name in experiments:
            found = MlflowClient().get_experiment_by_name(name)
            if found is None:
                raise UserInputError(f"experiment={name!r} not found in this tracking store")
            ids.append(found.experiment_id)
    if stale_after is not None and not (math.isfinite(stale_after) and stale_after >= 0):
        raise UserInputError(
            f"--stale-after must be a number of seconds >= 0, got {stale_after}; e.g. "
            "--stale-after 120"
        )
    dead = reap(ids, stale_after=STALE_AFTER_SECONDS if stale_after is None else stale_after,
                dry_run=dry_run)  # fmt: skip
    for d in dead:
        stage = d.run.data.tags.get(schema.STAGE, "?")
        click.echo(
            f"{'dead' if dry_run else 'KILLED'} {d.run.info.run_id} ({d.run.info.run_name}, "
            f"{stage}): {d.reason}; {resume_hint(d.run)}"
        )
    verb = "would mark" if dry_run else "marked"
    click.echo(f"{verb} {len(dead)} run(s) KILLED")


@cli.command("server")
@run_flags("dry_run")
@click.option("--folder", default="tsp-server", show_default=True,
              help="where the private PostgreSQL cluster and the artifacts live")  # fmt: skip
@click.option("--backend-store-uri", default="",
              help="an existing store, e.g. postgresql+psycopg2://mlflow@db/mlflow (password "
                   "via PGPASSWORD or ~/.pgpass); empty: a private PostgreSQL in --folder")  # fmt: skip
@click.option("--postgres-port", type=int, default=5433, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="0.0.0.0 serves the lab's network (then use --auth)")  # fmt: skip
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=int, default=None, help="uvicorn workers (default: one per core, at most 8)")  # fmt: skip
@click.option("--allowed-hosts", default="",
              help="Host headers MLflow answers, comma-separated (default: MLflow's, plus this "
                   "machine's names when --host is not loopback)")  # fmt: skip
@click.option("--auth", is_flag=True,
              help="MLflow basic-auth; the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD")  # fmt: skip
def server_command(
    folder: str, backend_store_uri: str, postgres_port: int, host: str, port: int,
    workers: int | None, allowed_hosts: str, auth: bool,
) -> None:  # fmt: skip
    """Start a tracking server on PostgreSQL with proxied artifacts; Ctrl-C stops it.

    \b
    Examples:
      tsp server                                   # private PostgreSQL in ./tsp-server
      MLFLOW_AUTH_ADMIN_PASSWORD=... tsp server --host 0.0.0.0 --auth
      tsp server --backend-store-uri postgresql+psycopg2://mlflow@db.lab/mlflow --dry-run
      tsp server --port 5001 --workers 2 --dry-run     # check the settings, start nothing
    Then, on each client:
      export MLFLOW_TRACKING_URI=http://<host>:5000
      tsp pipeline ...
    """
    import signal
    import time

    from tsp_mlflow.tracking.params import redact_uri
    from tsp_mlflow.tracking.postgres import server_bindir
    from tsp_mlflow.tracking.serve import check_server_settings, tracking_server

    if flags("server", supported=("dry_run",)).dry_run:
        n = check_server_settings(backend_store_uri or None, workers, auth)
        where = Path(folder).resolve()
        backend = (redact_uri(backend_store_uri) if backend_store_uri else
                   f"a private PostgreSQL in {where / 'postgres'} on port {postgres_port} "
                   f"({'exists' if (where / 'postgres').exists() else 'would be created'}; "
                   f"binaries in {server_bindir()})")  # fmt: skip
        click.echo(f"would start: mlflow server at http://{host}:{port} with {n} worker(s)"
                   f"{', basic-auth' if auth else ''}\n  backend    {backend}\n"
                   f"  artifacts  proxied into {where / 'server-artifacts'}")  # fmt: skip
        return

    def stop(signum: int, frame: object) -> None:  # a service manager's SIGTERM: stop cleanly
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)  # a closed terminal or ssh session
    with tracking_server(Path(folder), backend_store_uri=backend_store_uri or None,
                         postgres_port=postgres_port, host=host, port=port, workers=workers,
                         auth=auth, allowed_hosts=allowed_hosts or None) as served:  # fmt: skip
        click.echo(f"MLflow tracking server at {served.url} (backend {served.backend}; "
                   f"artifacts proxied into {served.artifacts})")  # fmt: skip
        click.echo(f"  clients:  export MLFLOW_TRACKING_URI={served.url}")
        if auth:
            click.echo("            export MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=...")  # fmt: skip
        if served.optuna_storage:
            click.echo(f"  sweeps:   tsp sweep --storage '{served.optuna_storage}' ...")
        click.echo("Ctrl-C stops the server and its database; the data stays.", nl=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopping")


@cli.command("ui")
@run_flags("dry_run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--backend-store-uri", default="",
              help="the store to browse (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")  # fmt: skip
def ui_command(host: str, port: int, backend_store_uri: str) -> None:
    """Start `mlflow ui` on the project's tracking store and print its URL; Ctrl-C stops it.

    \b
    Examples:
      tsp ui
      tsp ui --port 5001
      tsp ui --backend-store-uri sqlite:///results/mlflow.db
      tsp ui --dry-run                # print the store and URL, start nothing
    """
    import signal
    import time

    from tsp_mlflow.tracking.local_server import local_server
    from tsp_mlflow.tracking.params import redact_uri
    from tsp_mlflow.tracking.session import configure_tracking

    dry_run = flags("ui", supported=("dry_run",)).dry_run
    if backend_store_uri:
        os.environ["MLFLOW_TRACKING_URI"] = backend_store_uri
    uri = configure_tracking(prepare_store=False)
    if uri.startswith(("http://", "https://")):
        click.echo(f"The tracking store is a server already: open {redact_uri(uri)}")
        return
    if dry_run:
        click.echo(f"would start: mlflow ui --backend-store-uri {redact_uri(uri)} --host {host} "
                   f"--port {port}\nthen open http://{host}:{port}")  # fmt: skip
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    # Its log (and artifacts of runs logged through it) beside a sqlite store, else here.
    near = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else Path()
    with local_server(near / ".tsp-ui", backend_store_uri=uri, host=host, port=port,
                      command="ui") as url:  # fmt: skip
        click.echo(f"MLflow UI on {redact_uri(uri)}: open {url}  (Ctrl-C stops it)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopping")


@cli.command("analyze")
@run_flags("dry_run")
@click.option("--experiment", default="avdigits", show_default=True, help="experiment name or id")
@click.option("--parent-run", "--parent_run", "parent_run", default="",
              help="a pipeline run id: analyse only its children")  # fmt: skip
@click.option("--filter", "filter_string", default="",
              help="MLflow search filter ANDed to the selection, e.g. \"params.optim.lr = '0.001'\"")  # fmt: skip
@click.option("--metric", "--metrics", "metrics", default="",
              help="comma-separated per-pattern metrics, one correction family with the patterns; "
                   "empty: the task's headline metrics (accuracy,f1_macro for classification)")  # fmt: skip
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option(
    "--a", "arm_a", default="pretrained", show_default=True, help="condition A (Δ = A − B)"
)
@click.option("--b", "arm_b", default="scratch", show_default=True, help="condition B")
@click.option("--pair-on", default="seed", show_default=True, help="column that pairs runs")
@click.option("--correction", type=click.Choice(["bonferroni", "holm", "bh", "by", "none"]),
              default="bonferroni", show_default=True,
              help="p-value correction per family (verdicts use Bonferroni-simultaneous intervals "
                   "unless none)")  # fmt: skip
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--confidence", type=float, default=0.95, show_default=True)
@click.option("--rope", type=float, default=0.01, show_default=True,
              help="region of practical equivalence ±ROPE, metric units")  # fmt: skip
@click.option("--threshold", default="",
              help="validation level for time-to-threshold; empty: 95% of the median best value")  # fmt: skip
@click.option("--curve-metric", default="", help="convergence/cost metric; empty: the first metric")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="RNG seed for bootstraps")  # fmt: skip
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="also write the report, tables, figures and inputs into this folder")  # fmt: skip
@click.option("--no-log", is_flag=True, help="compute and print only; create no analysis run")
@click.option(
    "--tracking-uri", default="", help="tracking server or store (default: MLFLOW_TRACKING_URI)"
)
@click.option("--workers", type=click.IntRange(1, 64), default=8, show_default=True,
              help="concurrent requests to the tracking server")  # fmt: skip
def analyze_command(
    experiment: str, parent_run: str, filter_string: str, metrics: str, split: str, arm_a: str,
    arm_b: str, pair_on: str, correction: str, alpha: float, confidence: float, rope: float,
    threshold: str, curve_metric: str, seed: int, output: Path | None, no_log: bool,
    tracking_uri: str, workers: int,
) -> None:  # fmt: skip
    """Does pretraining help? Paired statistics per modality pattern, from the tracking server.

    \b
    Examples:
      tsp analyze --experiment avdigits
      tsp analyze --parent-run <pipeline run id> --metric accuracy --correction bh
      tsp analyze --tracking-uri http://mlflow.lab:5000 --experiment 1 --no-log --output report/
      tsp analyze --experiment avdigits --filter "tags.tsp.fusion = 'concat'"
      tsp analyze --experiment avdigits --dry-run    # = --no-log: create no analysis run
    """
    from analysis.analyze import analyze
    from analysis.results import AnalysisSettings

    no_log = flags("analyze", supported=("dry_run",)).dry_run or no_log
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    uri = _start()  # no use_experiment here: analysing must never create an experiment
    settings = AnalysisSettings(
        a=arm_a, b=arm_b, split=split, metrics=metrics, pair_on=pair_on, correction=correction,
        alpha=alpha, confidence=confidence, rope=rope, threshold=_optional_float("threshold", threshold),
        curve_metric=curve_metric or None, seed=seed,
    )  # fmt: skip
    result = analyze(
        experiment=experiment or None, parent_run=parent_run or None, filter_string=filter_string,
        settings=settings, log=not no_log, output_dir=output, max_workers=workers,
    )  # fmt: skip
    click.echo(result.report)
    from analysis.report import left_out_lines, warning_lines

    for line in [*warning_lines(result.results), *left_out_lines(result.results)]:
        click.echo(line)
    if result.run_id:
        click.echo(f"analysis run {result.run_id}")
    if result.folder:
        click.echo(f"report written to {result.folder}")
    click.echo(where_to_look(uri))


def _optional_float(name: str, text: str) -> float | None:
    if not str(text).strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise UserInputError(f"{name} must be a number, got {text!r}") from None


def registry_summary(
    dataset: str, modality: str, run_id: str, objective: str = "supervised"
) -> str:
    """Which version this run registered and where ``@champion`` stands now."""
    from mlflow import MlflowClient

    from tsp_mlflow.tracking import schema

    client = MlflowClient()
    name = schema.registered_encoder_name(dataset, modality, objective)
    (mine,) = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    champion = client.get_model_version_by_alias(name, schema.CHAMPION_ALIAS)
    monitor = champion.tags.get(schema.MODEL_VERSION_MONITOR, "?")
    value = champion.tags.get(schema.MODEL_VERSION_MONITOR_VALUE, "?")
    standing = (
        "it is @champion"
        if champion.version == mine.version
        else f"@champion stays on version {champion.version}"
    )
    return (
        f"registered {name} version {mine.version}; {standing} "
        f"({monitor} = {value}; models:/{name}/{mine.version} selects this one)"
    )


def where_to_look(uri: str) -> str:
    from tsp_mlflow.tracking.params import redact_uri

    uri = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"Tracking server: {uri} (open it in a browser)"
    here = uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"  # tsp ui's own default
    return (f"Tracking store: {uri}\nBrowse the runs:  tsp ui"
            f"{'' if here else f' --backend-store-uri {uri}'}   (it prints the URL to open)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run a command. Errors print one line (exit 2 for bad input, 1 otherwise) and end the
    `mlflow run` project run FAILED with the reason, if we had not attached to it yet."""
    # UserInputError covers EncoderNotFound and EncoderWeightsMismatch; a missing data file
    # is the user's to fix as well.
    user_errors: tuple[type[BaseException], ...] = (UserInputError, FileNotFoundError)
    try:
        cli.main(args=argv, prog_name="tsp", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):  # click turns Ctrl-C into Abort
        _fail_project_run("interrupted", "KILLED")
        click.echo("tsp: interrupted", err=True)
        from tsp_mlflow.tracking import session

        sys.exit(128 + (session.last_signal or 2))  # 130 for Ctrl-C, 143 for SIGTERM
    except click.ClickException as err:
        _fail_project_run(err.format_message())
        err.show()
        sys.exit(err.exit_code)
    except user_errors as err:
        if not _server_is_gone(err):
            _fail_project_run(str(err))
        click.echo(f"tsp: error: {_redact(err)}", err=True)
        sys.exit(2)
    except (TrainingDiverged, TrackingServerLost) as err:  # explained in full already
        click.echo(f"tsp: error: {_redact(err)}", err=True)
        sys.exit(1)
    except Exception as err:  # not bad input: one line still, the traceback on request
        if not _server_is_gone(err):
            _fail_project_run(f"{type(err).__name__}: {err}")
        if os.environ.get("TSP_TRACEBACK"):
            traceback.print_exc()
        click.echo(
            f"tsp: error: {type(err).__name__}: {_redact(err)} (set TSP_TRACEBACK=1 for the "
            "traceback)",
            err=True,
        )
        sys.exit(1)


def _redact(err: BaseException) -> str:
    """The message without credentials (an MLflow error quotes the URL it called)."""
    from tsp_mlflow.tracking.params import redact_uri

    return redact_uri(str(err))


def _server_is_gone(err: BaseException) -> bool:
    """Marking the project run FAILED would only retry against an unreachable server."""
    from tsp_mlflow.tracking.local_store import TrackingStoreError
    from tsp_mlflow.tracking.server import TrackingServerError, is_unreachable

    unusable = (TrackingServerError, TrackingServerLost, TrackingStoreError)
    return isinstance(err, unusable) or is_unreachable(err)


def _fail_project_run(reason: str, status: str = "FAILED") -> None:
    """Close the run ``mlflow run`` created if we failed before attaching to it."""
    from tsp_mlflow.training.distributed import is_main_process

    if not is_main_process():  # under torchrun rank 0 alone talks to MLflow
        return
    try:
        from tsp_mlflow.tracking.session import configure_tracking, fail_pending_project_run

        configure_tracking()
        fail_pending_project_run(reason, status)
    except Exception as err:  # the original error matters more than this follow-up
        click.echo(f"tsp: could not mark the MLflow run as {status}: {err}", err=True)
