"""``tsp <command>`` and ``python -m tsp_mlflow <command>``: the MLproject entry points.

This module is the shell: the ``tsp`` group with its shared switches, the commands it
registers (each defined in :mod:`tsp_mlflow.commands`, ``analyze`` in :mod:`analysis.command`),
and :func:`main`, which turns every error into one line and a FAILED project run.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from analysis.command import analyze_command
from tsp_mlflow.commands import store, sweep, train
from tsp_mlflow.errors import TrackingServerLost, TrainingDiverged, UserInputError
from tsp_mlflow.run_flags import run_flags

DISTRIBUTED_COMMANDS = ("pretrain", "multimodal")  # what torchrun may launch


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


for command in (
    train.pretrain,
    train.multimodal,
    train.pipeline,
    sweep.sweep,
    sweep.sensitivity_command,
    store.data,
    store.runs,
    store.server_command,
    store.ui_command,
    analyze_command,
):
    cli.add_command(command)


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
    from tsp_mlflow.tracking.server_check import TrackingServerError, is_unreachable

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
