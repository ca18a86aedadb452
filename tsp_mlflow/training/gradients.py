"""How the multimodal loss and the unimodal auxiliary losses become one update.

Unimodal heads beside the fusion head help a weaker modality's encoder, but their
gradients can conflict with the multimodal loss's. Three strategies (``conf/gradient/``):

* :class:`Joint`: the multimodal loss only (no unimodal heads; the thesis's setting);
* :class:`Uniform`: the plain sum of the multimodal and every unimodal loss;
* :class:`MMPareto`: MMPareto gradient integration (Wei & Hu, ICML 2024), following the
  official code (GeWu-Lab/MMPareto_ICML2024): per encoder, the multimodal and the
  unimodal gradient are combined with equal weights when they agree (cosine > 0) and with
  the two-task min-norm (Pareto) weights when they conflict; the result is rescaled to at
  least the uniform sum's norm and multiplied by ``gamma``. Every other parameter (fusion,
  heads, predictor) keeps the uniform-sum gradient.

Each strategy writes ``.grad`` of the model's trainable parameters; the loop then steps
the optimizer as usual. ``auxiliary`` losses (the missing-embedding predictor's) only
touch their own parameters and are added to every strategy's total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# modality -> statistic -> value for one step (MMPareto's per-encoder cosine and weights).
StepStats = dict[str, dict[str, float]]


class GradientStrategy:
    """Base class. ``unimodal``: whether the model needs unimodal heads and losses."""

    name: str = ""
    unimodal: bool = True

    def backward(
        self,
        model: nn.Module,
        multimodal: torch.Tensor,
        unimodal: Mapping[str, torch.Tensor],
        auxiliary: torch.Tensor | None = None,
    ) -> StepStats:
        """Write the gradients of this step into ``.grad`` (after ``zero_grad``)."""
        raise NotImplementedError


class Joint(GradientStrategy):
    """The multimodal loss only: unimodal heads are not built."""

    name = "joint"
    unimodal = False

    def backward(self, model, multimodal, unimodal, auxiliary=None) -> StepStats:  # noqa: ANN001
        _total(multimodal, {}, auxiliary).backward()
        return {}


class Uniform(GradientStrategy):
    """The sum of the multimodal and every unimodal loss, each with weight 1."""

    name = "uniform"

    def backward(self, model, multimodal, unimodal, auxiliary=None) -> StepStats:  # noqa: ANN001
        _total(multimodal, unimodal, auxiliary).backward()
        return {}


@dataclass(frozen=True)
class Direction:
    """MMPareto's result for one encoder: new gradients (one per tensor) and statistics."""

    grads: list[torch.Tensor]
    cosine: float
    weight_multimodal: float
    weight_unimodal: float
    scale: float  # gamma * max(1, ||s|| / ||h||), the factor applied to h


def min_norm_weights(
    g_mm: torch.Tensor, g_uni: torch.Tensor, min_weight: float = 0.001
) -> tuple[float, float]:
    """The two-task min-norm weights (α_mm, α_uni) of the official ``MinNormSolver``:
    α_mm = (‖g_u‖² − ⟨g_m, g_u⟩) / ‖g_m − g_u‖², clipped to [min_weight, 1 − min_weight]."""
    dot = float(torch.dot(g_mm, g_uni))
    uu = float(torch.dot(g_uni, g_uni))
    gap = float(torch.dot(g_mm - g_uni, g_mm - g_uni))
    alpha = (uu - dot) / gap if gap > 0 else 0.5
    alpha = min(max(alpha, min_weight), 1.0 - min_weight)
    return alpha, 1.0 - alpha


def mmpareto_direction(
    g_mm: Sequence[torch.Tensor],
    g_uni: Sequence[torch.Tensor],
    gamma: float = 1.5,
    min_weight: float = 0.001,
) -> Direction:
    """One encoder's MMPareto gradient from its multimodal and unimodal gradients.

    Args:
        g_mm: the multimodal loss's gradient, one tensor per parameter of the encoder.
        g_uni: the encoder's own unimodal loss's gradient, same shapes.

    Steps (official code): the cosine of the two flattened gradients; weights (0.5, 0.5)
    when it is positive, else :func:`min_norm_weights`; then per tensor
    ``h = 2(α_mm g_mm + α_u g_u)``, ``s = g_mm + g_u`` and
    ``grad = gamma * max(1, ‖s‖ / ‖h‖) * h``.
    """
    flat_mm = torch.cat([g.reshape(-1) for g in g_mm]).double()
    flat_uni = torch.cat([g.reshape(-1) for g in g_uni]).double()
    norms = float(flat_mm.norm() * flat_uni.norm())
    cosine = float(torch.dot(flat_mm, flat_uni)) / norms if norms > 0 else 0.0
    if cosine > 0:
        a_mm, a_uni = 0.5, 0.5
    else:
        a_mm, a_uni = min_norm_weights(flat_mm, flat_uni, min_weight)
    grads, scales = [], []
    for mm, uni in zip(g_mm, g_uni, strict=True):
        h = 2 * (a_mm * mm + a_uni * uni)
        s_norm, h_norm = float((mm + uni).norm()), float(h.norm())
        scale = gamma * (max(1.0, s_norm / h_norm) if h_norm > 0 else 1.0)
        grads.append(scale * h)
        scales.append(scale)
    mean_scale = sum(scales) / len(scales) if scales else gamma
    return Direction(grads, cosine, a_mm, a_uni, mean_scale)


class MMPareto(GradientStrategy):
    """MMPareto gradient integration per encoder (see the module docstring).

    Costs two backward passes per step (the multimodal loss, then the unimodal losses,
    whose graphs are disjoint per encoder) instead of one.

    Args:
        gamma: the official code's γ, the factor on every integrated encoder gradient.
        min_weight: the min-norm weights are clipped to [min_weight, 1 − min_weight].
    """

    name = "mmpareto"

    def __init__(self, gamma: float = 1.5, min_weight: float = 0.001) -> None:
        if not (isinstance(gamma, int | float) and gamma > 0 and math.isfinite(gamma)):
            raise ValueError(f"gradient.gamma must be a positive number, got {gamma!r}")
        if not 0 < min_weight < 0.5:
            raise ValueError(f"gradient.min_weight must lie in (0, 0.5), got {min_weight!r}")
        self.gamma = float(gamma)
        self.min_weight = float(min_weight)

    def backward(self, model, multimodal, unimodal, auxiliary=None) -> StepStats:  # noqa: ANN001
        params = [p for p in model.parameters() if p.requires_grad]
        g_mm = torch.autograd.grad(multimodal, params, retain_graph=True, allow_unused=True)
        rest = _total(None, unimodal, auxiliary)
        g_rest = (
            torch.autograd.grad(rest, params, allow_unused=True)
            if rest is not None and rest.requires_grad
            else (None,) * len(params)
        )
        # Every parameter first gets the uniform-sum gradient; encoders are then replaced.
        uniform = {}
        for p, a, b in zip(params, g_mm, g_rest, strict=True):
            uniform[id(p)] = _add(a, b, p)
            p.grad = uniform[id(p)]
        grads_mm = {id(p): g for p, g in zip(params, g_mm, strict=True)}
        grads_rest = {id(p): g for p, g in zip(params, g_rest, strict=True)}
        stats: StepStats = {}
        for m, encoder in model.encoders.items():
            own = [p for p in encoder.parameters() if p.requires_grad]
            if not own or m not in unimodal:  # frozen, or no row had this modality
                continue
            mm = [_or_zeros(grads_mm[id(p)], p) for p in own]
            uni = [_or_zeros(grads_rest[id(p)], p) for p in own]
            direction = mmpareto_direction(mm, uni, self.gamma, self.min_weight)
            for p, g in zip(own, direction.grads, strict=True):
                untouched = grads_mm[id(p)] is None and grads_rest[id(p)] is None
                p.grad = None if untouched else g  # as a plain backward leaves it
            stats[m] = {
                "cosine": direction.cosine,
                "weight_multimodal": direction.weight_multimodal,
                "weight_unimodal": direction.weight_unimodal,
                "conflict": float(direction.cosine <= 0),
                "scale": direction.scale,
            }
        return stats


def _total(
    multimodal: torch.Tensor | None,
    unimodal: Mapping[str, torch.Tensor],
    auxiliary: torch.Tensor | None,
) -> torch.Tensor | None:
    parts = [x for x in (multimodal, *unimodal.values(), auxiliary) if x is not None]
    return sum(parts[1:], parts[0]) if parts else None


def _add(a: torch.Tensor | None, b: torch.Tensor | None, p: torch.Tensor) -> torch.Tensor | None:
    if a is None and b is None:
        return None
    return _or_zeros(a, p) + _or_zeros(b, p)


def _or_zeros(g: torch.Tensor | None, p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p) if g is None else g
