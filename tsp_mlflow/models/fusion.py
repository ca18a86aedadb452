"""Late-fusion modules: ``forward(feats, present) -> (B, out_dim)``, all mask-aware.

``feats`` maps modality -> (B, D_m); ``present`` is (B, M) bool in ``self.modalities``
order. A modality that is absent from ``feats`` or masked in ``present`` is *excluded*:
it adds nothing to a sum, is not counted in a mean, cannot win a max, and gets no gate or
attention weight. ``missing="zero"`` restores the thesis's rule instead: a missing
embedding is a zero vector that takes part like any other (a mean then divides by M).

Every module keeps its per-modality layers in ``nn.ModuleDict``s keyed by modality name,
so reordering the modalities (with the same weights) never changes the output, except for
``concat``, whose output layout follows the modality order by definition. A row with no
modality present has nothing to fuse and raises.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Missing = Literal["exclude", "zero"]


def _check(present: torch.Tensor, modalities: tuple[str, ...]) -> None:
    if present.ndim != 2 or present.shape[1] != len(modalities):
        raise ValueError(
            f"present has shape {tuple(present.shape)}, expected (B, {len(modalities)}) "
            f"for {', '.join(modalities)}"
        )
    if not bool(present.any(dim=1).all()):
        raise ValueError(
            "a sample has no modality present: there is nothing to fuse; keep at least one "
            "modality per sample"
        )


def _stack(
    feats: dict[str, torch.Tensor], present: torch.Tensor, modalities: tuple[str, ...], dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, dim) embeddings (zeros where absent) and the (B, M) mask of usable ones."""
    ref = next(iter(feats.values()))
    rows = []
    mask = present.clone()
    for i, m in enumerate(modalities):
        if m in feats:
            rows.append(feats[m])
        else:
            rows.append(ref.new_zeros(ref.shape[0], dim))
            mask[:, i] = False
    return torch.stack(rows, dim=1), mask


class ConcatFusion(nn.Module):
    """Concatenate embeddings in modality order; a missing modality's slot is zero.

    For concatenation, zero-filling *is* leaving the modality out: its slot carries no
    signal and its encoder gets exactly zero gradient (the mask multiplies, so shapes stay
    static). This is the thesis's rule.

    Args:
        in_dims: embedding size per modality, in the dataset's modality order.
    """

    def __init__(self, in_dims: dict[str, int]) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError("ConcatFusion needs at least one modality")
        self.in_dims = dict(in_dims)
        self.modalities = tuple(in_dims)
        self.out_dim = sum(in_dims.values())

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        _check(present, self.modalities)
        batch = present.shape[0]
        ref = next(iter(feats.values()))
        parts = []
        for i, modality in enumerate(self.modalities):
            if modality in feats:
                mask = present[:, i : i + 1].to(feats[modality].dtype)  # (B, 1)
                parts.append(feats[modality] * mask)
            else:
                parts.append(ref.new_zeros(batch, self.in_dims[modality]))
        return torch.cat(parts, dim=1)  # (B, sum D_m)


class _Projected(nn.Module):
    """Shared part of the pooling fusions: a linear projection per modality to ``dim``."""

    def __init__(self, in_dims: dict[str, int], dim: int, missing: Missing) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError(f"{type(self).__name__} needs at least one modality")
        if missing not in ("exclude", "zero"):
            raise ValueError(f"missing={missing!r}: choose exclude or zero")
        self.modalities = tuple(in_dims)
        self.project = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items()})
        self.missing = missing
        self.dim = self.out_dim = dim

    def projected(
        self, feats: dict[str, torch.Tensor], present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-modality projections and masks.

        Returns:
            (B, M, dim) projections, zeroed where a modality is missing; the (B, M) mask of
            modalities really present; and the (B, M) mask of slots that take part in the
            pooling (all of them with ``missing="zero"``).
        """
        _check(present, self.modalities)
        proj = {m: self.project[m](x) for m, x in feats.items()}
        stacked, real = _stack(proj, present, self.modalities, self.dim)
        stacked = stacked * real.unsqueeze(-1).to(stacked.dtype)  # (B, M, dim)
        pooled = torch.ones_like(real) if self.missing == "zero" else real
        return stacked, real, pooled


class SumFusion(_Projected):
    """Sum of per-modality projections over the present modalities.

    Args:
        in_dims: embedding size per modality.
        dim: common projection size (the output size).
        missing: ``exclude`` (default) or ``zero`` (the thesis's zero-fill).
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, missing: Missing = "exclude"):
        super().__init__(in_dims, dim, missing)

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        stacked, _, _ = self.projected(feats, present)
        return stacked.sum(dim=1)  # (B, dim)


class AvgFusion(_Projected):
    """Mean of per-modality projections over the present modalities (not over all M).

    Args:
        in_dims: embedding size per modality.
        dim: common projection size.
        missing: ``exclude`` (mean over present) or ``zero`` (mean over all M, zeros in).
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, missing: Missing = "exclude"):
        super().__init__(in_dims, dim, missing)

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        stacked, _, mask = self.projected(feats, present)
        count = mask.sum(dim=1, keepdim=True).to(stacked.dtype)  # (B, 1)
        return stacked.sum(dim=1) / count  # (B, dim)


class MaxFusion(_Projected):
    """Element-wise max of per-modality projections over the present modalities.

    Args:
        in_dims: embedding size per modality.
        dim: common projection size.
        missing: ``exclude`` (absent ones cannot win) or ``zero`` (a zero vector competes).
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, missing: Missing = "exclude"):
        super().__init__(in_dims, dim, missing)

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        stacked, _, mask = self.projected(feats, present)
        floor = torch.finfo(stacked.dtype).min
        masked = stacked.masked_fill(~mask.unsqueeze(-1), floor)  # (B, M, dim)
        return masked.amax(dim=1)  # (B, dim)


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the modality axis (1) of (B, M, ...) logits, zero where masked."""
    while mask.ndim < logits.ndim:
        mask = mask.unsqueeze(-1)
    weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
    return weights.masked_fill(~mask, 0.0)


class GatedFusion(_Projected):
    """A gated multimodal unit (GMU, Arevalo et al. 2017) over any number of modalities.

    Each modality gives a candidate ``h_m = tanh(W_m x_m)``. The gate sees every present
    input through a shared context ``c = sum_present U_m x_m`` and gives per-dimension
    weights ``z = softmax_m(G_m c)`` over the present modalities (for two modalities this
    is the GMU's ``z, 1 - z``). The output is ``sum_m z_m * h_m``.

    Args:
        in_dims: embedding size per modality.
        dim: hidden size of the unit (the output size).
        missing: ``exclude`` or ``zero``.
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, missing: Missing = "exclude"):
        super().__init__(in_dims, dim, missing)
        self.context = nn.ModuleDict({m: nn.Linear(d, dim, bias=False) for m, d in in_dims.items()})
        self.gate = nn.ModuleDict({m: nn.Linear(dim, dim) for m in in_dims})
        self.last_weights: torch.Tensor | None = None

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        stacked, real, mask = self.projected(feats, present)  # (B, M, dim)
        candidates = torch.tanh(stacked)
        ctx, _ = _stack(
            {m: self.context[m](x) for m, x in feats.items()}, present, self.modalities, self.dim
        )
        context = (ctx * real.unsqueeze(-1).to(ctx.dtype)).sum(dim=1)  # (B, dim), present only
        logits = torch.stack([self.gate[m](context) for m in self.modalities], dim=1)  # (B, M, dim)
        weights = _masked_softmax(logits, mask)  # (B, M, dim), sums to 1 over present
        self.last_weights = weights.detach()
        return (weights * candidates).sum(dim=1)  # (B, dim)


class AttentionFusion(_Projected):
    """Learned attention over modality embeddings: one weight per modality and sample.

    ``e_m = tanh(W_m x_m)``, score ``s_m = v . tanh(A e_m)``, weights ``a = softmax`` over
    the present modalities, output ``sum_m a_m e_m``.

    Args:
        in_dims: embedding size per modality.
        dim: embedding size after projection (the output size).
        attention_dim: hidden size of the scoring MLP.
        missing: ``exclude`` or ``zero``.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        dim: int = 128,
        attention_dim: int = 64,
        missing: Missing = "exclude",
    ) -> None:
        super().__init__(in_dims, dim, missing)
        self.score = nn.Sequential(
            nn.Linear(dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1, bias=False)
        )
        self.last_weights: torch.Tensor | None = None

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        stacked, _, mask = self.projected(feats, present)
        embedded = torch.tanh(stacked)  # (B, M, dim); zero where missing
        weights = _masked_softmax(self.score(embedded).squeeze(-1), mask)  # (B, M)
        self.last_weights = weights.detach()
        return (weights.unsqueeze(-1) * embedded).sum(dim=1)  # (B, dim)
