"""Framework overhead: our training loop vs a minimal hand-written PyTorch loop.

Both train the same late-fusion model (same initial weights) on the same avdigits arrays
with the same batch size, optimizer and shuffling, and both validate once per epoch, as
any researcher's loop does. Ours (``tsp_mlflow.training.loop.fit``) also reads samples
through the dataset contract (named modalities, presence masks), checks the loss for
NaN, keeps the epoch's outputs for training metrics, validates every modality pattern
with the full metric set, steps the plateau scheduler and keeps the best weights. The
minimal loop does none of that: tensors straight from a ``TensorDataset``, accuracy of
the full pattern only.

Throughput is training samples per second of epoch wall time. Target: ours / minimal
>= 0.95.

    python -m bench.framework_overhead           # 5 rounds x 5 epochs per arm (~2 min)
    python -m bench.framework_overhead --quick
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from bench.harness import (
    EpochClock,
    Result,
    Setup,
    Table,
    arguments,
    avdigits,
    interleave,
    ratio,
    save,
)

TARGET = ">= 0.95"


def ours(setup: Setup) -> list[float]:
    return [len(setup.datasets["train"]) / s for s in setup.fit_epochs()]


def minimal(setup: Setup) -> list[float]:
    """What one writes by hand: tensors in, cross-entropy, Adam, val accuracy."""
    model, device = setup.model(), setup.device
    optimizer = instantiate(setup.cfg.optim)(model.parameters())  # Adam, as configured
    a, b = setup.modalities
    train, val = (
        TensorDataset(d.inputs[a], d.inputs[b], d.targets)
        for d in (setup.datasets["train"], setup.datasets["val"])
    )
    batch_size = setup.cfg.trainer.batch_size
    generator = torch.Generator().manual_seed(0)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(val, batch_size=batch_size)
    clock = EpochClock()
    for _ in range(setup.cfg.trainer.epochs):
        model.train()
        for xa, xb, y in train_loader:
            xa, xb, y = xa.to(device), xb.to(device), y.to(device)
            present = torch.ones(len(y), 2, dtype=torch.bool, device=device)
            loss = F.cross_entropy(model({a: xa, b: xb}, present), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for xa, xb, y in val_loader:
                xa, xb, y = xa.to(device), xb.to(device), y.to(device)
                present = torch.ones(len(y), 2, dtype=torch.bool, device=device)
                correct += (model({a: xa, b: xb}, present).argmax(1) == y).sum().item()
        clock()
    return [len(train) / s for s in clock.intervals()]


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    epochs, rounds = (3, 1) if args.quick else (5, 5)
    setup = avdigits([f"trainer.epochs={epochs}"], quick=args.quick)
    samples = interleave({"ours": lambda: ours(setup), "minimal": lambda: minimal(setup)}, rounds)
    result = Result("framework_overhead", "Framework overhead", quick=args.quick)
    result.add_table(
        Table(
            f"avdigits train split ({len(setup.datasets['train'])} samples), batch "
            f"{setup.cfg.trainer.batch_size}, {epochs} epochs x {rounds} rounds per arm "
            "(first and last epoch of each run left out)",
            ["loop", "median samples/s", "min", "max", "epochs measured"],
            [[name, float(np.median(s)), min(s), max(s), len(s)] for name, s in samples.items()],
        )
    )
    result.add_ratio(
        ratio("samples/s, ours / minimal loop", samples["ours"], samples["minimal"], TARGET)
    )
    save(result, args.out)


if __name__ == "__main__":
    main()
