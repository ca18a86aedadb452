"""Multi-process training under ``torchrun``: one process per device, PyTorch DDP.

``torchrun --nproc_per_node=N -m tsp_mlflow pretrain|multimodal ...`` starts N copies of the
command. Each reads its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); :func:`init_distributed` joins them in one process group (gloo on CPU,
nccl on CUDA). What the ranks share:

- **Batches.** ``trainer.batch_size`` stays the *global* batch: every step the ranks split
  the batch a single process would draw (same seed, same order) row-wise, so each step
  sees the same samples as a single-process run (:class:`RankBatches`). Each rank's loss
  is weighted by its share of the step's rows (:func:`shard_weight`), so DDP's gradient
  average equals the single-process gradient even when a batch does not split evenly.
- **Metrics.** Each rank evaluates a contiguous shard of val/test; outputs and targets
  are gathered in rank order (:func:`all_rows`) and every rank computes the same metrics,
  so every rank takes the same scheduler step and best epoch.
- **Tracking.** Only rank 0 talks to MLflow: it opens the run and :func:`broadcast_text`
  hands the run id to the others; it alone logs, checkpoints and registers.

Batch norm: on CUDA the model's batch norms become ``SyncBatchNorm`` (statistics over the
global batch). PyTorch has no CPU ``SyncBatchNorm``, so under gloo each rank normalises
over its own shard, as PyTorch Lightning does by default; docs/deploy.md states what that
costs in agreement with a single-process run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sized
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Subset

from tsp_mlflow.errors import UserInputError

# Long enough for rank 0 to download encoders or a checkpoint while the others wait.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> Ranks:
    """The ranks torchrun announced in the environment (no process group needed)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserInputError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them); unset "
            "them to train in one process"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise UserInputError(f"RANK={rank} is not within WORLD_SIZE={world}; launch with torchrun")
    return Ranks(rank, world, local)


def current() -> Ranks:
    """The joined process group's ranks; one process when none was joined."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), launched().local_rank)
    return Ranks()


def is_main_process() -> bool:
    """Whether this process may talk to MLflow (rank 0, or the only process)."""
    return launched().is_main


def init_distributed(device: torch.device | None = None) -> torch.device | None:
    """Join torchrun's process group (once per process) and pick this rank's device.

    Returns this rank's device; one process (no ``WORLD_SIZE`` > 1) gets ``device`` back. The
    group runs gloo for CPU tensors and, where CUDA exists, nccl for CUDA tensors; on CUDA
    each rank takes ``cuda:<LOCAL_RANK>``.
    """
    ranks = launched()
    if not ranks.enabled:
        return device
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    if device is not None and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    elif device is not None and device.type != "cpu":
        raise UserInputError(
            f"runtime.device={device.type}: multi-process training runs on CPU (gloo) or "
            "CUDA (nccl); use runtime.device=cpu or cuda"
        )
    return device


def backend(device: torch.device) -> str:
    """The backend that carries this run's tensors: nccl on CUDA, gloo elsewhere."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the others do (it creates a tracking store's tables,
    which two processes must not race to do); one process: just the block."""
    ranks = current()
    if ranks.enabled and not ranks.is_main:
        dist.barrier()
    yield
    if ranks.enabled and ranks.is_main:
        dist.barrier()


def broadcast_text(text: str | None, ranks: Ranks) -> str:
    """Rank 0's ``text`` on every rank (the run id). Plain bytes in a tensor: nothing is
    pickled. An empty string tells the others that rank 0 failed before it had one."""
    if not ranks.enabled:
        return text or ""
    data = torch.tensor(list((text or "").encode()), dtype=torch.uint8)
    size = torch.tensor([len(data)], dtype=torch.int64)
    dist.broadcast(size, src=0)
    if not ranks.is_main:
        data = torch.empty(int(size.item()), dtype=torch.uint8)
    if int(size.item()):
        dist.broadcast(data, src=0)
    return bytes(data.tolist()).decode()


def all_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order (one process: ``tensor`` itself).

    Ranks may hold different numbers of rows (a split that does not divide evenly): sizes
    are exchanged first and shorter shards padded for the collective, then trimmed.
    """
    if not current().enabled:
        return tensor
    world = dist.get_world_size()
    rows = torch.tensor([tensor.shape[0]], dtype=torch.int64)
    sizes = [torch.zeros_like(rows) for _ in range(world)]
    dist.all_gather(sizes, rows)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *tensor.shape[1:]), dtype=tensor.dtype)
    padded[: tensor.shape[0]] = tensor.cpu()
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    return torch.cat([chunk[:n] for chunk, n in zip(chunks, counts, strict=True)])


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of a scalar over ranks (one process: ``tensor`` itself)."""
    if not current().enabled:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def shard_weight(rows: int, device: torch.device) -> torch.Tensor | float:
    """What a rank's mean loss is multiplied by, so that DDP's average over ranks equals
    the mean over the whole step's rows: ``rows * world / step_rows``."""
    if not current().enabled:
        return 1.0
    total = torch.tensor([float(rows)], device=device)
    dist.all_reduce(total)
    return rows * dist.get_world_size() / total


class RankBatches(torch.utils.data.Sampler[list[int]]):
    """This rank's rows of each global batch: ``batch[rank::world]``.

    The global batches are the ones a single process draws (``BatchSampler`` over a
    ``RandomSampler`` with the run's generator). A last batch with fewer rows than ranks
    is dropped on every rank, so no rank steps on an empty shard.
    """

    def __init__(self, batches: BatchSampler, ranks: Ranks) -> None:
        self.batches, self.ranks = batches, ranks

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) >= self.ranks.world_size:
                yield batch[self.ranks.rank :: self.ranks.world_size]

    def __len__(self) -> int:
        rows, size = len(self.batches.sampler), self.batches.batch_size  # type: ignore[arg-type]
        short = 0 < rows % size < self.ranks.world_size  # the dropped last batch
        return len(self.batches) - int(short)


def shard_loaders(loaders: dict[str, DataLoader], ranks: Ranks) -> dict[str, DataLoader]:
    """This rank's view of the run's loaders: train draws its rows of the global batches
    (the same generator, so the same order on every rank); val and test take a contiguous
    shard each, gathered back in order by :func:`all_rows`."""
    if not ranks.enabled:
        return loaders
    out = {}
    for split, loader in loaders.items():
        dataset = loader.dataset
        common = {
            "num_workers": loader.num_workers,
            "persistent_workers": loader.persistent_workers,
            "pin_memory": loader.pin_memory,
        }
        n = len(dataset) if isinstance(dataset, Sized) else 0
        if n < ranks.world_size:  # every rank must hold rows for every step and gather
            raise UserInputError(
                f"the {split} split has {n} rows, fewer than the {ranks.world_size} "
                "processes torchrun started; use fewer processes"
            )
        if split == "train":
            batches = BatchSampler(
                RandomSampler(dataset, generator=loader.generator),
                batch_size=int(loader.batch_size or 1),
                drop_last=False,
            )
            out[split] = DataLoader(
                dataset,
                batch_sampler=RankBatches(batches, ranks),
                generator=loader.generator,
                **common,
            )
        else:
            start, stop = (
                n * ranks.rank // ranks.world_size,
                n * (ranks.rank + 1) // ranks.world_size,
            )
            out[split] = DataLoader(
                Subset(dataset, range(start, stop)), batch_size=loader.batch_size, **common
            )
    return out


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (rank 0's weights broadcast to the others);
    one process: ``model`` itself. On CUDA, batch norms are synchronised first."""
    ranks = current()
    if not ranks.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # find_unused_parameters: a trainable parameter outside the loss (a pretrained BERT's
    # pooler) would otherwise stall DDP's reduction from the second step on.
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank. DDP sends them at
    the start of each forward, so after an epoch's last step each rank holds its own:
    evaluating with them would score each shard with another model than rank 0 saves."""
    if not current().enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def check_supported(
    *, gradient: str = "joint", imputation: str = "none", objective: str = "supervised"
) -> None:
    """Refuse, before any run exists, what multi-process training does not do."""
    if not launched().enabled:
        return
    if gradient != "joint":
        raise UserInputError(
            f"gradient={gradient} under torchrun: multi-process training supports "
            "gradient=joint (unimodal-loss strategies combine per-rank gradients outside "
            "DDP); run it in one process"
        )
    if imputation != "none":
        raise UserInputError(
            f"imputation={imputation} under torchrun: multi-process training supports "
            "imputation=none; run it in one process"
        )
    if objective != "supervised":
        raise UserInputError(
            f"objective={objective} under torchrun: contrastive negatives would stay "
            "within each rank's shard; run it in one process"
        )


def check_batch_size(batch_size: int) -> None:
    """Every rank needs rows of each global batch."""
    world = launched().world_size
    if world > 1 and batch_size < world:
        raise UserInputError(
            f"trainer.batch_size={batch_size} under torchrun with {world} processes: the "
            f"global batch is split across the ranks; give at least {world} rows"
        )
