"""How each encoder trains: fully (``finetune``), not at all (``frozen``), or only its
biases (``bitfit``, Ben Zaken et al. 2022); fusion and head always train. An optional
learning rate per modality becomes its own optimizer parameter group."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.late_fusion import LateFusionModel

MODES = ("finetune", "frozen", "bitfit")


def encoder_modes(
    default: str, per_modality: Mapping[str, str], modalities: Sequence[str]
) -> dict[str, str]:
    """modality -> mode, validated (``finetune.mode`` unless ``finetune.modes`` says otherwise)."""
    unknown = sorted(set(per_modality) - set(modalities))
    if unknown:
        raise UserInputError(
            f"finetune.modes names unknown modalities {unknown}; this dataset has "
            f"{', '.join(modalities)}"
        )
    modes = {m: str(per_modality.get(m, default)) for m in modalities}
    bad = {m: v for m, v in modes.items() if v not in MODES}
    if bad:
        raise UserInputError(f"finetune modes {bad} are unknown; choose from {', '.join(MODES)}")
    return modes


def apply_modes(model: LateFusionModel, modes: Mapping[str, str]) -> None:
    """Set ``requires_grad`` per encoder; frozen encoders also stay in eval mode (their
    normalisation statistics do not move either)."""
    for m, encoder in model.encoders.items():
        mode = modes.get(m, "finetune")
        for name, param in encoder.named_parameters():
            param.requires_grad = mode == "finetune" or (mode == "bitfit" and _is_bias(name))
    model.frozen = {m for m, mode in modes.items() if mode == "frozen"}
    model.train(model.training)


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "bias"


def is_learning_rate(value: object) -> bool:
    """A positive, finite number (torch itself accepts 0, and inf only fails mid-run)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def check_learning_rates(lrs: Mapping[str, float | None], modalities: Sequence[str]) -> None:
    unknown = sorted(set(lrs) - set(modalities))
    if unknown:
        raise UserInputError(
            f"finetune.lr names unknown modalities {unknown}; this dataset has "
            f"{', '.join(modalities)}"
        )
    for m, lr in lrs.items():
        if lr is not None and not is_learning_rate(lr):
            raise UserInputError(
                f"finetune.lr.{m} must be a positive number, got {lr!r}; e.g. finetune.lr={{{m}:1e-4}}"
            )


def param_groups(model: LateFusionModel, lrs: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """Trainable parameters, one group per modality with its own learning rate, the rest
    (other encoders, fusion, head) in a group that uses the optimizer's ``lr``."""
    check_learning_rates(lrs, model.modalities)
    own = {m: lr for m, lr in lrs.items() if lr is not None}
    grouped: set[int] = set()
    groups: list[dict[str, Any]] = []
    for m, lr in own.items():
        params = [p for p in model.encoders[m].parameters() if p.requires_grad]
        grouped |= {id(p) for p in params}
        if params:
            groups.append({"params": params, "lr": float(lr)})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    return [{"params": rest}, *groups]


def parameter_counts(model: LateFusionModel) -> dict[str, float]:
    """``params/total``, ``params/trainable`` and the same per encoder, fusion and head
    (and the unimodal heads and the predictor, when the model has them)."""

    def count(module: nn.Module, trainable: bool = False) -> float:
        return float(
            sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)
        )

    counts = {
        "params/total": count(model),
        "params/trainable": count(model, True),
        "params/fusion": count(model.fusion),
        "params/head": count(model.head),
    }
    if model.unimodal_heads is not None:
        counts["params/unimodal_heads"] = count(model.unimodal_heads)
    if model.predictor is not None:
        counts["params/predictor"] = count(model.predictor)
    for m, encoder in model.encoders.items():
        counts[f"params/encoder/{m}"] = count(encoder)
        counts[f"params/encoder/{m}/trainable"] = count(encoder, True)
    return counts
