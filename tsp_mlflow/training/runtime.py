"""Device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from tsp_mlflow.errors import UserInputError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, then Apple MPS, then CPU."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise UserInputError(
            f"runtime.device={device!r} is not a device; choose one of {', '.join(DEVICES)} or cuda:N"
        )
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(
            f"runtime.device={device} was requested but CUDA is not available; use runtime.device=auto"
        )
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for DataLoader shuffling."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise UserInputError(f"seed={seed!r} must be an integer in [0, 2^32); e.g. seed=0")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
