"""Predict a missing modality's embedding from the present ones, trained with VICReg.

Adapted from Kim & Kim (arXiv 2407.12616): when a modality is missing, the paper
predicts its embedding from the modalities that are present and trains that predictor
with VICReg, so the fusion head sees a plausible embedding instead of zeros. The paper's
read-only prompts need transformer encoders; here the predictor is instead a small MLP
per *ordered* pair of modalities (``a -> b``) over detached embeddings, so it works with
whatever encoder produces them. With three or more modalities, the predictions from every
present modality are averaged.

The predictor is trained only by its own VICReg loss (``EmbeddingPredictor.loss``), on
the rows where both modalities of a pair are present. It never receives the classifier's
gradient and never moves the encoders: its inputs and targets are detached, and the
embeddings it fills in (``EmbeddingPredictor.complete``) are computed without a graph.

``feats`` maps modality -> (B, D_m); ``present`` is (B, M) bool in ``self.modalities``
order. A modality absent from ``feats`` counts as missing in every row.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class VICRegTerms(NamedTuple):
    """The weighted VICReg loss and its three unweighted terms, all 0-dim tensors."""

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square (d, d) matrix, flattened to (d * d - d,)."""
    d = matrix.shape[0]
    return matrix.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def vicreg_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """VICReg (Bardes et al. 2022) between two (n, d) batches, as in the official code.

    Follows ``main_vicreg.py`` of facebookresearch/vicreg, except that ``n`` is the real
    batch size ``x.shape[0]``: the paired rows of a batch vary in number, and dividing by
    a configured size would bias the covariance term.

    Args:
        x: (n, d) predictions.
        y: (n, d) targets.
        sim_coeff: weight of the invariance (MSE) term.
        std_coeff: weight of the variance (std hinge) term.
        cov_coeff: weight of the covariance (off-diagonal) term.
        gamma: target standard deviation of every dimension.
        eps: added to the variance before the square root, for stability.

    Returns:
        The weighted loss and its unweighted invariance, variance and covariance terms.
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(
            f"vicreg_loss needs two (n, d) tensors of the same shape, got x {tuple(x.shape)} "
            f"and y {tuple(y.shape)}"
        )
    n, d = x.shape
    if n < 2:
        raise ValueError(
            f"vicreg_loss needs at least 2 rows to estimate a variance, got n={n}; skip "
            "batches with fewer paired rows"
        )
    invariance = F.mse_loss(x, y)

    x = x - x.mean(dim=0)  # (n, d)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)  # (d,), unbiased
    std_y = torch.sqrt(y.var(dim=0) + eps)
    variance = torch.mean(F.relu(gamma - std_x)) / 2 + torch.mean(F.relu(gamma - std_y)) / 2

    cov_x = (x.T @ x) / (n - 1)  # (d, d)
    cov_y = (y.T @ y) / (n - 1)
    covariance = _off_diagonal(cov_x).pow(2).sum() / d + _off_diagonal(cov_y).pow(2).sum() / d

    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return VICRegTerms(loss, invariance, variance, covariance)


class EmbeddingPredictor(nn.Module):
    """One small MLP per ordered modality pair that predicts ``b``'s embedding from ``a``'s.

    The MLPs live in an ``nn.ModuleDict`` keyed ``f"{a}_to_{b}"``, so reordering the
    modalities (with the same weights) never changes a prediction.

    Args:
        in_dims: embedding size per modality, in the dataset's modality order (>= 2).
        hidden: hidden size of every pair's MLP.
        sim_coeff: VICReg invariance weight used by ``loss``.
        std_coeff: VICReg variance weight used by ``loss``.
        cov_coeff: VICReg covariance weight used by ``loss``.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        hidden: int = 128,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
    ) -> None:
        super().__init__()
        if len(in_dims) < 2:
            raise ValueError(
                f"EmbeddingPredictor needs at least 2 modalities to predict one from another, "
                f"got {list(in_dims)}"
            )
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        coeffs = {"sim_coeff": sim_coeff, "std_coeff": std_coeff, "cov_coeff": cov_coeff}
        bad = {k: v for k, v in coeffs.items() if not (isinstance(v, int | float) and v >= 0)}
        if bad:
            raise ValueError(f"VICReg coefficients must be numbers >= 0, got {bad}")
        self.in_dims = dict(in_dims)
        self.modalities = tuple(in_dims)
        self.sim_coeff = sim_coeff
        self.std_coeff = std_coeff
        self.cov_coeff = cov_coeff
        self.predictors = nn.ModuleDict(
            {
                self._key(a, b): nn.Sequential(
                    nn.Linear(in_dims[a], hidden), nn.GELU(), nn.Linear(hidden, in_dims[b])
                )
                for a, b in self.pairs
            }
        )
        if len(self.predictors) != len(self.pairs):
            raise ValueError(
                f"modality names {list(in_dims)} give clashing pair keys '<a>_to_<b>'; "
                "rename the modalities so that none contains '_to_'"
            )

    @staticmethod
    def _key(source: str, target: str) -> str:
        return f"{source}_to_{target}"

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every ordered pair ``(a, b)`` of distinct modalities, in modality order."""
        return [(a, b) for a in self.modalities for b in self.modalities if a != b]

    def predict(self, feats: dict[str, torch.Tensor], source: str, target: str) -> torch.Tensor:
        """(B, D_target) prediction of ``target``'s embedding from ``feats[source]``.

        The input is cast to the predictor's dtype; the result is in that dtype.
        """
        key = self._key(source, target)
        if source == target or key not in self.predictors:
            raise ValueError(
                f"no predictor {source!r} -> {target!r}: choose two different modalities "
                f"of {', '.join(self.modalities)}"
            )
        if source not in feats:
            raise ValueError(
                f"cannot predict {target!r} from {source!r}: {source!r} is not in feats "
                f"(has {', '.join(feats)})"
            )
        mlp = self.predictors[key]
        weight = mlp[0].weight
        return mlp(feats[source].to(device=weight.device, dtype=weight.dtype))

    def _usable(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """Validate the inputs; return the (B, M) mask of embeddings that are really there."""
        if present.ndim != 2 or present.shape[1] != len(self.modalities):
            raise ValueError(
                f"present has shape {tuple(present.shape)}, expected (B, {len(self.modalities)}) "
                f"for {', '.join(self.modalities)}"
            )
        if not feats:
            raise ValueError(
                f"feats is empty: give the embeddings of at least one of {', '.join(self.modalities)}"
            )
        unknown = sorted(set(feats) - set(self.modalities))
        if unknown:
            raise ValueError(
                f"feats has modalities {unknown} that the predictor was not built for "
                f"({', '.join(self.modalities)})"
            )
        batch = present.shape[0]
        for m, x in feats.items():
            if x.shape != (batch, self.in_dims[m]):
                raise ValueError(
                    f"feats[{m!r}] has shape {tuple(x.shape)}, expected "
                    f"({batch}, {self.in_dims[m]}) from present and in_dims"
                )
        device = next(iter(feats.values())).device  # the mask follows the embeddings
        usable = present.to(device=device, dtype=torch.bool).clone()
        for i, m in enumerate(self.modalities):
            if m not in feats:
                usable[:, i] = False
        return usable

    def complete(
        self, feats: dict[str, torch.Tensor], present: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Fill in every missing embedding with the mean prediction from the present ones.

        Rows where a modality is present keep its true embedding (and its gradient, so the
        encoders still learn from real inputs). The filled-in embeddings are computed under
        ``torch.no_grad()``: the classifier's loss never trains the predictor.

        Args:
            feats: modality -> (B, D_m); a modality may be absent (missing in every row).
            present: (B, M) bool in ``self.modalities`` order; every row needs one True.

        Returns:
            modality -> (B, D_m) for every modality, and an all-True (B, M) mask.
        """
        usable = self._usable(feats, present)
        if not bool(usable.any(dim=1).all()):
            raise ValueError(
                "a sample has no modality present: there is nothing to predict from; keep "
                "at least one modality per sample"
            )
        ref = next(iter(feats.values()))
        completed: dict[str, torch.Tensor] = {}
        for j, target in enumerate(self.modalities):
            missing = ~usable[:, j]  # (B,)
            if target in feats and not bool(missing.any()):
                completed[target] = feats[target]
                continue
            dtype = feats[target].dtype if target in feats else ref.dtype
            with torch.no_grad():
                total = ref.new_zeros(ref.shape[0], self.in_dims[target], dtype=dtype)
                for i, source in enumerate(self.modalities):
                    if source == target or source not in feats:
                        continue
                    pred = self.predict(feats, source, target).to(ref.device, dtype)  # (B, D)
                    # where() rather than a product: a missing source may hold NaN/inf junk.
                    total = total + torch.where(usable[:, i : i + 1], pred, 0.0)
                count = usable.sum(dim=1, keepdim=True) - usable[:, j : j + 1].long()  # (B, 1)
                predicted = (total / count.clamp(min=1).to(dtype)).detach()  # (B, D_target)
            if target in feats:
                completed[target] = torch.where(missing.unsqueeze(1), predicted, feats[target])
            else:
                completed[target] = predicted
        return completed, torch.ones_like(present, dtype=torch.bool)

    def loss(
        self, feats: dict[str, torch.Tensor], present: torch.Tensor
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """Mean VICReg loss over the ordered pairs, on the rows where both are present.

        Inputs and targets are detached, so this loss trains only the predictor. A pair
        with fewer than 2 paired rows is skipped (VICReg needs a variance).

        Args:
            feats: modality -> (B, D_m).
            present: (B, M) bool in ``self.modalities`` order.

        Returns:
            The mean loss over the pairs used (None when no pair had 2 paired rows), and
            the float stats ``vicreg``, ``invariance``, ``variance``, ``covariance`` and
            ``paired_rows`` averaged over those pairs (an empty dict when none).
        """
        usable = self._usable(feats, present)
        index = {m: i for i, m in enumerate(self.modalities)}
        terms: list[VICRegTerms] = []
        rows_used: list[int] = []
        for source, target in self.pairs:
            paired = usable[:, index[source]] & usable[:, index[target]]  # (B,)
            n = int(paired.sum())
            if n < 2:
                continue
            inputs = {source: feats[source].detach()[paired]}  # (n, D_source)
            pred = self.predict(inputs, source, target)  # (n, D_target)
            truth = feats[target].detach()[paired].to(pred.device, pred.dtype)
            terms.append(
                vicreg_loss(
                    pred,
                    truth,
                    sim_coeff=self.sim_coeff,
                    std_coeff=self.std_coeff,
                    cov_coeff=self.cov_coeff,
                )
            )
            rows_used.append(n)
        if not terms:
            return None, {}
        loss = torch.stack([t.loss for t in terms]).mean()
        stats = {
            name: float(torch.stack([getattr(t, field).detach() for t in terms]).mean())
            for name, field in (
                ("vicreg", "loss"),
                ("invariance", "invariance"),
                ("variance", "variance"),
                ("covariance", "covariance"),
            )
        }
        stats["paired_rows"] = sum(rows_used) / len(rows_used)
        return loss, stats
