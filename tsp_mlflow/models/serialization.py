"""Encoder files: weights as safetensors plus the architecture as JSON. No pickle anywhere.

A saved encoder is a folder::

    model.safetensors   the state dict
    encoder.json        {"format": 1, "_target_": "<allow-listed class>", "kwargs": {...}}
    tokenizer/          text encoders only: tokenizer.json and its config (JSON)

Encoders with more than weights (a tokenizer) implement ``save_assets(folder)`` and
``load_assets(folder)``; the assets are read before the weights.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from tsp_mlflow.errors import EncoderWeightsMismatch, UnsafeArtifact
from tsp_mlflow.models.encoders import ENCODER_CLASSES

__all__ = ["EncoderWeightsMismatch", "UnsafeArtifact", "load_encoder_folder", "save_encoder"]

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "encoder.json"
FORMAT_VERSION = 1


def encoder_spec(encoder: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able architecture of ``encoder``, built with constructor ``kwargs``."""
    target = f"{type(encoder).__module__}.{type(encoder).__qualname__}"
    if target not in ENCODER_CLASSES:
        raise TypeError(
            f"{target} is not a registered encoder class; add it to "
            "tsp_mlflow.models.encoders.ENCODER_CLASSES to save and load it"
        )
    return {"format": FORMAT_VERSION, "_target_": target, "kwargs": dict(kwargs)}


def save_encoder(encoder: nn.Module, spec: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    if hasattr(encoder, "save_assets"):
        encoder.save_assets(folder)
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
    return folder


def read_encoder_spec(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this artifact is not a tsp-mlflow encoder "
            f"(expected {SPEC_FILE} and {WEIGHTS_FILE})"
        )
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnsafeArtifact(
            f"{path} is not valid JSON ({err}); the artifact is corrupted"
        ) from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT_VERSION:
        raise UnsafeArtifact(
            f"{path}: unsupported encoder format "
            f"{spec.get('format') if isinstance(spec, dict) else spec!r}"
        )
    return spec


def allowed_class(spec: dict[str, Any]) -> type[nn.Module]:
    """The encoder class a spec names, if it is on the allow-list; else refused."""
    target = str(spec.get("_target_"))
    cls = ENCODER_CLASSES.get(target) if target.startswith("tsp_mlflow.") else None
    if cls is None:
        raise UnsafeArtifact(
            f"refusing to build {target!r} named by an encoder artifact: only tsp-mlflow's "
            f"encoder classes may be loaded from a tracking server ({', '.join(ENCODER_CLASSES)})"
        )
    return cls


def build_encoder(spec: dict[str, Any]) -> nn.Module:
    """Construct an encoder from a spec read back from an artifact.

    The spec comes from a tracking server, which anyone with write access can fill, so it
    may only name a constructor inside ``tsp_mlflow`` that is on the encoder allow-list,
    with plain JSON arguments (never instantiated recursively, unlike a Hydra config).
    Anything else is refused before any of it is imported or called.
    """
    cls, target = allowed_class(spec), spec["_target_"]
    kwargs = spec.get("kwargs", {})
    try:
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a mapping, got {type(kwargs).__name__}")
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise UnsafeArtifact(
            f"encoder spec for {target} has invalid arguments {kwargs}: {err}"
        ) from None
    return cls(**kwargs)


def load_encoder_folder(
    folder: str | os.PathLike[str], expected: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the encoder saved in ``folder`` and load its weights (strictly).

    Args:
        expected: a configured encoder node (``_target_`` + kwargs); when given, the stored
            architecture must be exactly this one, checked before any weights are read.
    """
    folder = Path(folder)
    spec = read_encoder_spec(folder)
    allowed_class(spec)  # before anything else reads the spec
    if expected is not None:
        check_same_architecture(spec, expected)
    encoder = build_encoder(spec)
    if hasattr(encoder, "load_assets"):
        encoder.load_assets(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error type for any bad header
        raise EncoderWeightsMismatch(
            f"{weights} is not a readable safetensors file ({str(err).splitlines()[0]}); the "
            "artifact is corrupted: pretrain the encoder again or pick another version "
            "(models:/<name>/<version> or run:<id>)"
        ) from None
    load_weights_strict(encoder, state, source=str(weights))
    return encoder, spec


def check_same_architecture(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise unless ``spec`` describes the configured encoder ``expected``."""
    from hydra.utils import get_object

    want_cls = get_object(expected["_target_"])
    want = {k: v for k, v in expected.items() if not k.startswith("_")}
    have_cls = ENCODER_CLASSES.get(str(spec.get("_target_")))
    if have_cls is not want_cls or spec.get("kwargs", {}) != want:
        raise EncoderWeightsMismatch(
            f"the stored encoder is {_describe(spec.get('_target_'), spec.get('kwargs', {}))} but the "
            f"config asks for {_describe(expected['_target_'], want)}; configure the encoder it "
            "was pretrained with (model/encoder@model.encoders.<modality>=...), pick a version "
            "pretrained with this architecture (models:/<name>/<version> or run:<id>), or "
            "pretrain one first"
        )


def _describe(target: Any, kwargs: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    return f"{str(target).rsplit('.', 1)[-1]}({args})"


def load_weights_strict(module: nn.Module, state: dict[str, Any], source: str) -> None:
    """Load ``state`` into ``module``; on any mismatch, name every offending key."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} (weights {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches: {', '.join(shapes)}")
        raise EncoderWeightsMismatch(
            f"encoder weights in {source} do not fit the architecture "
            f"{type(module).__name__}: {'; '.join(problems)}. Load weights saved for this "
            "architecture, or match the encoder config to the one that produced them"
        )
    module.load_state_dict(state, strict=True)
