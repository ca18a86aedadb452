"""Errors the user can fix. The CLI prints these as one line, without a traceback."""


class UserInputError(ValueError):
    """Bad input: the message names the parameter, what was wrong and how to fix it."""
