"""Errors the analysis raises for input it cannot analyse (torch-free)."""

from __future__ import annotations

from tsp_mlflow.errors import UserInputError


class AnalysisInputError(UserInputError):
    """The runs or the frame cannot answer the question asked; the message says why."""
