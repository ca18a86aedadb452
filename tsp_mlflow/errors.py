"""Errors the user can fix. The CLI prints these as one line, without a traceback.

They live here, torch-free, so the CLI can catch them without importing models.
"""


class UserInputError(ValueError):
    """Bad input: the message names the parameter, what was wrong and how to fix it."""


class EncoderNotFound(UserInputError):
    """An encoder URI names a run or model that does not exist."""


class EncoderWeightsMismatch(UserInputError):
    """Stored encoder weights do not fit the stored or configured architecture."""


class DataFormatError(UserInputError):
    """A dataset file is missing or not in the layout its loader reads.

    The message names the file, the key or column, what was expected and what was found.
    """


class RunStopped(Exception):
    """A run ended early on purpose (a sweep's pruner stopped an unpromising trial).

    ``tracked_run`` ends the run KILLED with the reason in ``tsp.stopped``: not an error,
    and not a normal finished run either.
    """
