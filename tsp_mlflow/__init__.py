"""tsp-mlflow: does task-specific pretraining of each modality's encoder help late fusion?

Importing the package is cheap and torch-free; ``load_encoder`` pulls in torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tsp_mlflow.version import __version__

__all__ = ["__version__", "load_encoder"]

if TYPE_CHECKING:
    from tsp_mlflow.api import load_encoder


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from tsp_mlflow.api import load_encoder

        return load_encoder
    raise AttributeError(f"module 'tsp_mlflow' has no attribute {name!r}")
