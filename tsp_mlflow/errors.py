"""Errors the user can fix. The CLI prints these as one line, without a traceback.

They live here, torch-free, so the CLI can catch them without importing models.
"""


class UserInputError(ValueError):
    """Bad input: the message names the parameter, what was wrong and how to fix it."""


class EncoderNotFound(UserInputError):
    """An encoder URI names a run or model that does not exist."""


class EncoderWeightsMismatch(UserInputError):
    """Stored encoder weights do not fit the stored or configured architecture."""


class UnsafeArtifact(UserInputError):
    """An artifact read back from a tracking server names code outside tsp-mlflow, or is
    not in our format: refused, never executed."""


class DataFormatError(UserInputError):
    """A dataset file is missing or not in the layout its loader reads.

    The message names the file, the key or column, what was expected and what was found.
    """


class RunStopped(Exception):
    """A run ended early on purpose (a sweep's pruner stopped an unpromising trial).

    ``tracked_run`` ends the run KILLED with the reason in ``tsp.stopped``: not an error,
    and not a normal finished run either.
    """


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. The run ends FAILED; the message names
    the epoch and step, and what to change."""


class ResumeTaken(UserInputError):
    """Another process resumed the same run at the same moment; this one stands down
    without touching the run."""


class TrackingServerLost(RuntimeError):
    """The tracking server stayed unreachable past MLflow's retries mid-run. The run
    cannot be closed, so it stays RUNNING with its last checkpoint: reap, then resume."""

    def __init__(self, run_id: str, cause: BaseException) -> None:
        super().__init__(
            f"the tracking server stayed unreachable ({type(cause).__name__}), so run {run_id} "
            "could not be closed and stays RUNNING with its last checkpoint. Once the server "
            f"is back: tsp runs reap, then rerun the same command with --resume {run_id}"
        )
        self.run_id = run_id
