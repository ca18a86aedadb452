"""Entry-point parameters as they arrive from ``mlflow run -P`` (strings, often empty), checked
and turned into config overrides. Their names are a public contract shared with ``MLproject``.
"""

from __future__ import annotations

from tsp_mlflow.errors import UserInputError

EPOCHS_HELP = "epochs (positive integer); empty keeps the config's trainer.epochs"
OVERRIDES_HELP = "Hydra overrides, space-separated, e.g. 'optim.lr=1e-3 debug=tiny'"
RESUME_HELP = (
    "an interrupted run's id: continue that same run from its last checkpoint (give the "
    "same other arguments as when it started)"
)


def optional_int(name: str, text: str | None) -> int | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UserInputError(f"{name} must be an integer, got {text!r}") from None
    if value <= 0:
        raise UserInputError(f"{name} must be a positive integer, got {value}; e.g. -P {name}=10")
    return value


def stage_overrides(dataset: str, epochs: str | None, overrides: str, *params: str) -> list[str]:
    """Entry-point parameters as Hydra overrides; the user's ``overrides`` come last and win."""
    from tsp_mlflow.config import split_overrides

    n = optional_int("epochs", epochs)
    return [
        f"data={dataset}",
        *params,
        *([f"trainer.epochs={n}"] if n else []),
        *split_overrides(overrides),
    ]


def check_dataset_choice(dataset: str) -> None:
    from tsp_mlflow.config import group_options

    options = group_options("data")
    if dataset not in options:
        raise UserInputError(
            f"unknown dataset {dataset!r} (-P dataset); choose one of {', '.join(options)}"
        )
