"""The public Python API for reusing registered encoders in new models."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
from torch import nn

from tsp_mlflow.errors import EncoderWeightsMismatch, UnsafeArtifact
from tsp_mlflow.models.serialization import load_encoder_folder
from tsp_mlflow.tracking.resolve import EncoderLocation, download_encoder, resolve_encoder
from tsp_mlflow.tracking.session import configure_tracking


def load_encoder(uri: str) -> nn.Module:
    """Load a trainable encoder from the tracking server, without unpickling anything.

    Args:
        uri: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``run:<run_id>`` or
            ``runs:/<run_id>[/encoder]``.

    Returns:
        The encoder module (e.g. ``SmallCNN``), weights loaded, in train mode, with
        ``out_dim`` set and ``tsp_source`` / ``tsp_run_id`` attributes for lineage.
    """
    if not is_tracking_uri_set():  # respect a URI the caller already chose
        configure_tracking()
    encoder, _ = load_encoder_with_location(resolve_encoder(uri))
    return encoder


def load_encoder_with_location(
    location: EncoderLocation, expected: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Download and build an encoder; ``expected`` pins its architecture (see serialization)."""
    with tempfile.TemporaryDirectory(prefix="tsp-encoder-") as tmp:
        folder = download_encoder(location, Path(tmp))
        try:
            encoder, spec = load_encoder_folder(folder, expected)
        except (UnsafeArtifact, EncoderWeightsMismatch, FileNotFoundError) as err:
            # Name the artifact where it lives, not the temporary copy deleted on return.
            where = location.artifact_uri
            message = str(err).replace(str(folder), where)
            raise type(err)(message) from None
    encoder.tsp_source = location.uri  # type: ignore[assignment]
    encoder.tsp_run_id = location.run_id  # type: ignore[assignment]
    return encoder.train(), spec
