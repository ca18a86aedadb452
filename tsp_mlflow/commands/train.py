"""The training commands: ``tsp pretrain``, ``tsp multimodal`` and ``tsp pipeline``."""

from __future__ import annotations

import click

from tsp_mlflow.commands.parameters import (
    EPOCHS_HELP,
    OVERRIDES_HELP,
    RESUME_HELP,
    check_dataset_choice,
    optional_int,
    stage_overrides,
)
from tsp_mlflow.commands.running import (
    echo,
    mark_project_run_as_resuming,
    print_plan,
    registry_summary,
    run_or_resume,
    start,
)
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.run_flags import ON_TRAINING_RUNS, flags, run_flags
from tsp_mlflow.tracking.session import where_to_look


@click.command()
@run_flags()
@click.option("--dataset", default="avdigits", show_default=True)
@click.option(
    "--modality",
    default="",
    help="supervised: the modality whose encoder to pretrain; contrastive: the "
    "modalities, comma-separated (empty or 'all': every one)",
)
@click.option(
    "--objective",
    default="supervised",
    show_default=True,
    help="supervised (the modality's own labels) | contrastive (paired, label-free)",
)
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

    check_dataset_choice(dataset)
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
    cfg, _ = compose_config("pretrain", stage_overrides(dataset, epochs, overrides, *params))
    recipe = make_pretrain_recipe(cfg)
    start()
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_pretrain

        print_plan(plan_pretrain, recipe, resume)
        return
    run_id = run_or_resume(recipe, resume, cfg.tracking.experiment)
    if not is_main_process():
        return
    if cfg.trainer.skip_train:
        click.echo(
            f"pretrain run {run_id} finished (--skip-train: evaluated untrained; "
            "nothing registered)"
        )
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


@click.command()
@run_flags()
@click.option("--dataset", default="avdigits", show_default=True)
@click.option(
    "--encoders",
    default="scratch",
    show_default=True,
    help="scratch | pretrained | contrastive | <modality>=<scratch|pretrained|URI>,...",
)
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

    check_dataset_choice(dataset)
    if fusion not in group_options("model/fusion"):
        raise UserInputError(
            f"unknown fusion {fusion!r} (-P fusion); choose one of {', '.join(group_options('model/fusion'))}"
        )
    start()  # encoder URIs are resolved against the tracking server while validating
    if resume:  # the exact encoder runs it used, wherever `pretrained` points now
        encoders = encoders_of_run(resume, given=encoders) or encoders
    given = flags("multimodal")
    params = (
        f"model/fusion={fusion}",
        f"encoders={quote(encoders)}",
        f"seed={seed}",
        *given.overrides(),
    )
    stage = stage_overrides(dataset, epochs, overrides, *params)
    cfg, choices = compose_config("multimodal", stage)
    recipe = MultimodalRecipe(cfg, fusion_name=choices["model/fusion"])
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_multimodal

        print_plan(plan_multimodal, recipe, resume)
        return
    run_id = run_or_resume(recipe, resume, cfg.tracking.experiment)
    echo(f"multimodal run {run_id} finished (condition {recipe.condition})")


@click.command()
@run_flags(*ON_TRAINING_RUNS)
@click.option("--dataset", default="avdigits", show_default=True)
@click.option(
    "--seeds",
    default="auto",
    show_default=True,
    help="fusion runs per condition: N (fixed), or auto (adaptive: add seeds until decided)",
)
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

    check_dataset_choice(dataset)
    parse_seeds(seeds)  # before anything touches the store
    given = flags("pipeline", supported=ON_TRAINING_RUNS)
    # Without test metrics the closing analysis compares the validation split.
    switches = [*given.overrides(), *(["analysis.split=val"] if given.skip_test else [])]
    uri = start()
    recipe = PipelineRecipe(
        dataset,
        seeds,
        optional_int("epochs", epochs),
        [*switches, *split_overrides(overrides)],
        resume=resume,
    )
    if given.dry_run:
        from tsp_mlflow.recipes.plan import plan_pipeline

        click.echo(
            plan_pipeline(recipe)
            + (f"\n  resumes      run {resume} (its finished runs are kept)" if resume else "")
        )
        return
    if resume:  # the run's experiment is fixed already
        mark_project_run_as_resuming(resume)
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
        click.echo(
            f"Adaptive seeds: looks at {', '.join(map(str, result.looks))} seeds; "
            f"stopped: {result.stop_reason}"
        )
    click.echo(
        f"\nFull report: artifact {ANALYSIS_REPORT_ARTIFACT} of the analysis run {result.analysis.run_id}"
    )
    click.echo(where_to_look(uri))
