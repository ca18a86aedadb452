"""Contrastive (CLIP-style) pretraining of unimodal encoders on paired samples.

The encoders of every modality are trained jointly so that the embeddings of one sample's
modalities land close together and those of different samples apart. This reuses the
late-fusion model and its one training loop unchanged:

* the "fusion" is :class:`~tsp_mlflow.models.contrastive.ContrastiveProjection`: a linear projection per modality, L2
  normalised, concatenated in modality order (B, M * dim);
* the "head" is :class:`ContrastiveObjective`, which is also the :class:`Task`: its
  ``forward`` is the identity, and it owns the learnable temperature and the optional
  memory queue, so both are trained by the model's optimizer and saved in the model's
  ``state_dict`` (checkpoints, resume) like any other weight.

Why these choices:

* The loss is the symmetric InfoNCE of CLIP (Radford et al., 2021): for every pair of
  modalities, cross-entropy of each sample against the other samples of the batch, in
  both directions, so neither modality is the privileged query.
* The temperature is learned as in CLIP, as ``log(1 / T)``, and the scale is clamped at
  100 (CLIP's clamp) so it cannot grow until the logits overflow.
* An optional queue adds negatives beyond the batch, as in MoCo (He et al., 2020): small
  batches otherwise see few negatives. The keys are detached embeddings of earlier
  batches from the same, online, encoders: a memory queue *without* a momentum encoder,
  so the keys lag the encoders by up to ``queue_size / batch_size`` steps.
* Retrieval recall@k (is the paired sample among the k nearest of all N samples of the
  split?) is the quality measure: it is what the embeddings are for, and unlike the loss
  it does not depend on the batch size or the temperature.

The encoders this trains are saved like supervised ones and can be loaded by the fusion
recipes in the same way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.training.tasks import Task

RECALL_KS = (1, 5, 10)
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on exp(logit_scale), i.e. temperature >= 0.01


def info_nce(
    za: torch.Tensor,
    zb: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    negatives_a: torch.Tensor | None = None,
    negatives_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between two modalities' embeddings of the same B samples.

    Row i of ``za`` and row i of ``zb`` are the positive pair; every other row of the other
    modality, and every extra negative, is a negative.

    Args:
        za: (B, d) L2-normalised embeddings of modality a.
        zb: (B, d) L2-normalised embeddings of modality b, row-aligned with ``za``.
        logit_scale: scalar tensor, the already exponentiated scale (1 / temperature).
        negatives_a: (K, d) extra negatives of modality a, for the b -> a direction.
        negatives_b: (K, d) extra negatives of modality b, for the a -> b direction.

    Returns:
        Scalar: the mean of the a -> b and b -> a cross-entropies.
    """
    if za.shape != zb.shape or za.ndim != 2:
        raise ValueError(
            f"za and zb must be row-aligned (B, d) embeddings, got {tuple(za.shape)} and "
            f"{tuple(zb.shape)}"
        )
    keys_b = zb if negatives_b is None else torch.cat([zb, negatives_b.to(zb.dtype)])
    keys_a = za if negatives_a is None else torch.cat([za, negatives_a.to(za.dtype)])
    logits_ab = logit_scale * za @ keys_b.T  # (B, B + K_b)
    logits_ba = logit_scale * zb @ keys_a.T  # (B, B + K_a)
    labels = torch.arange(za.shape[0], device=za.device)  # the positive is the diagonal
    return (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2


def retrieval_recall(
    queries: torch.Tensor,
    keys: torch.Tensor,
    ks: Sequence[int] = RECALL_KS,
    chunk: int = 1024,
) -> dict[int, float]:
    """Recall@k of retrieving ``keys[i]`` for ``queries[i]`` among all N keys, by cosine.

    The rank of the match is the number of other keys at least as similar as it: ties
    count against the match, so a collapsed encoder (all outputs equal) scores 0, not 1.
    Query rows are processed ``chunk`` at a time, so memory is O(chunk x N).

    Args:
        queries: (N, d) embeddings of one modality (normalised here).
        keys: (N, d) embeddings of another modality, row-aligned with ``queries``.
        ks: the k of each recall; a k above N counts every row (recall 1).
        chunk: query rows per block.

    Returns:
        k -> fraction of rows whose match has rank < k.
    """
    if queries.ndim != 2 or queries.shape != keys.shape or len(queries) == 0:
        raise ValueError(
            f"queries and keys must be non-empty, row-aligned (N, d) embeddings, got "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if any(k < 1 for k in ks) or chunk < 1:
        raise ValueError(f"every k and chunk must be at least 1, got ks={tuple(ks)}, {chunk=}")
    q = F.normalize(queries.detach().float(), dim=1)
    k_ = F.normalize(keys.detach().float(), dim=1)
    n = len(q)
    ranks = []
    for start in range(0, n, chunk):
        sims = q[start : start + chunk] @ k_.T  # (c, N)
        rows = torch.arange(len(sims), device=sims.device)
        cols = rows + start
        match = sims[rows, cols].clone()  # (c,)
        sims[rows, cols] = -math.inf  # the match itself is not a competitor
        ranks.append((sims >= match[:, None]).sum(dim=1))  # (c,) other keys at least as close
    rank = torch.cat(ranks)  # (N,)
    return {k: float((rank < k).float().mean()) for k in ks}


class ContrastiveObjective(nn.Module, Task):
    """The model's head and the task of contrastive pretraining, in one module.

    ``forward`` passes the projections through; :meth:`loss` is the mean symmetric InfoNCE
    over every unordered pair of modalities; :meth:`metrics` reports cross-modal retrieval
    recall over a whole split. Labels are never read (``target_kind = "paired"``).

    Args:
        modalities: modality names, in the order of :class:`ContrastiveProjection`.
        dim: per-modality projection size (the projection's ``dim``).
        temperature: initial softmax temperature (CLIP starts at 0.07).
        learn_temperature: train ``logit_scale`` (CLIP) or keep it fixed.
        queue_size: rows of past embeddings kept per modality as extra negatives
            (0: in-batch negatives only).
        monitor: validation metric that picks the best epoch.
    """

    name = "contrastive"
    target_kind = "paired"
    lower_is_better = frozenset({"loss"})  # temperature is informational, never a target
    headline_metrics = ("recall_at_1", "recall_at_5")
    eval_chunk: int = 1024  # rows per block in metrics(): memory O(eval_chunk x N)

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int = 64,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        queue_size: int = 0,
        monitor: str = "recall_at_1",
    ) -> None:
        nn.Module.__init__(self)
        modalities = tuple(modalities)
        if len(modalities) < 2 or len(set(modalities)) != len(modalities):
            raise UserInputError(
                f"objective.modalities={list(modalities)}: contrastive pretraining needs at least "
                "two distinct modalities"
            )
        if dim < 1:
            raise UserInputError(f"objective.dim must be at least 1, got {dim}")
        if not temperature > 0:
            raise UserInputError(f"objective.loss.temperature must be positive, got {temperature}")
        if queue_size < 0:
            raise UserInputError(
                f"objective.loss.queue_size must be 0 (off) or positive, got {queue_size}"
            )
        self.modalities = modalities
        self.dim = dim
        self.queue_size = queue_size
        self.directions = tuple(itertools.permutations(modalities, 2))  # ordered a -> b
        self.metrics_names = (
            *(f"{a}_to_{b}_recall_at_{k}" for a, b in self.directions for k in RECALL_KS),
            *(f"recall_at_{k}" for k in RECALL_KS),
            "temperature",
        )
        if monitor == "temperature":  # logged to watch, never a target
            raise UserInputError(
                "objective.loss.monitor=temperature is informational; monitor loss or a recall"
            )
        Task.__init__(self, dim * len(modalities), monitor)  # checks monitor
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / temperature)), requires_grad=learn_temperature
        )
        if queue_size > 0:
            for m in modalities:
                self.register_buffer(f"queue_{m}", torch.zeros(queue_size, dim))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
            self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    @property
    def scale(self) -> torch.Tensor:
        """exp(logit_scale), at most 100: the inverse temperature the logits use."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # (B, M * dim): the projections are the output

    def split(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """modality -> (B, dim) chunk of the model output."""
        if out.ndim != 2 or out.shape[1] != self.num_outputs:
            raise ValueError(
                f"contrastive output has shape {tuple(out.shape)}, expected (B, "
                f"{self.num_outputs}) = {len(self.modalities)} modalities x dim {self.dim}; "
                "the projection's dim must equal the objective's (objective.dim)"
            )
        return dict(zip(self.modalities, out.split(self.dim, dim=1), strict=True))

    def queued(self, modality: str) -> torch.Tensor | None:
        """(filled, dim) past embeddings of ``modality``, or None without a queue."""
        if self.queue_size == 0 or int(self.queue_filled) == 0:
            return None
        return getattr(self, f"queue_{modality}")[: int(self.queue_filled)]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean symmetric InfoNCE over every unordered pair of modalities.

        In training mode with a queue, the batch's detached embeddings are enqueued after
        the loss is computed, so a sample is never its own negative.

        Args:
            logits: (B, M * dim) the model output (unit-norm projections).
            target: ignored.
        """
        z = self.split(logits)
        scale = self.scale
        pairs = list(itertools.combinations(self.modalities, 2))
        total = sum(
            info_nce(z[a], z[b], scale, negatives_a=self.queued(a), negatives_b=self.queued(b))
            for a, b in pairs
        )
        if self.training and self.queue_size > 0:
            self._enqueue(z)
        return total / len(pairs)

    @torch.no_grad()
    def _enqueue(self, z: dict[str, torch.Tensor]) -> None:
        """Ring-buffer write of the batch; a batch larger than the queue keeps its end."""
        size, ptr = self.queue_size, int(self.queue_ptr)
        batch = next(iter(z.values())).shape[0]
        keep = min(batch, size)
        rows = (ptr + batch - keep + torch.arange(keep)) % size  # (keep,) slots, in order
        for m, x in z.items():
            queue = getattr(self, f"queue_{m}")
            queue[rows.to(queue.device)] = x[batch - keep :].detach().to(queue.dtype)
        self.queue_ptr.fill_((ptr + batch) % size)
        self.queue_filled.fill_(min(int(self.queue_filled) + batch, size))

    @torch.no_grad()
    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Loss, retrieval recall in every direction and the temperature, over a split.

        The loss uses all N rows as negatives (no queue), so it does not depend on the
        batch size; it and the recalls are computed ``eval_chunk`` rows at a time.

        Args:
            logits: (N, M * dim) the model outputs of the whole split.
            target: ignored.
        """
        z = {m: x.float() for m, x in self.split(logits).items()}
        scale = self.scale.float().to(logits.device)
        pairs = list(itertools.combinations(self.modalities, 2))
        losses = [
            (
                _full_nce(z[a], z[b], scale, self.eval_chunk)
                + _full_nce(z[b], z[a], scale, self.eval_chunk)
            )
            / 2
            for a, b in pairs
        ]
        out: dict[str, float] = {"loss": float(sum(losses) / len(pairs))}
        for a, b in self.directions:
            recall = retrieval_recall(z[a], z[b], RECALL_KS, chunk=self.eval_chunk)
            out.update({f"{a}_to_{b}_recall_at_{k}": r for k, r in recall.items()})
        for k in RECALL_KS:
            out[f"recall_at_{k}"] = sum(
                out[f"{a}_to_{b}_recall_at_{k}"] for a, b in self.directions
            ) / len(self.directions)
        out["temperature"] = float(1.0 / scale)
        return out


def _full_nce(
    queries: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor, chunk: int
) -> torch.Tensor:
    """One direction of InfoNCE with all N keys as candidates, ``chunk`` rows at a time.

    Equal to ``cross_entropy(scale * queries @ keys.T, arange(N))`` in O(chunk x N) memory.
    """
    total = queries.new_zeros(())
    for start in range(0, len(queries), chunk):
        logits = scale * queries[start : start + chunk] @ keys.T  # (c, N)
        rows = torch.arange(len(logits), device=logits.device)
        positive = logits[rows, rows + start]  # (c,)
        total = total + (torch.logsumexp(logits, dim=1) - positive).sum()
    return total / len(queries)
