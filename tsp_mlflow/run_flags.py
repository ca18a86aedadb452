"""The switches every ``tsp`` command shares: ``--dry-run``, ``--skip-train``, ``--skip-test``,
``--disable-monitoring`` and ``--system-metrics``.

They may be given before the command (``tsp --dry-run pretrain``), after it
(``tsp pretrain --dry-run``) or in the environment (``TSP_DRY_RUN=1``). They live here, below
every other layer and torch-free, so that a command defined in ``analysis/`` takes them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click

from tsp_mlflow.errors import UserInputError


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
}


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
                f"--{name.replace('_', '-')}",
                name,
                is_flag=True,
                expose_value=False,
                callback=_set_flag,
                help=FLAG_HELP[name],
                envvar=f"TSP_{name.upper()}",
            )(command)
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
