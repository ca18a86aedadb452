"""Resumable training state, saved without pickle.

A checkpoint is a folder of two files:

    state.safetensors   every tensor: model, optimizer moments, best weights, RNG states
    state.json          everything else (epoch, scheduler counters, metric history, ...),
                        with each tensor replaced by a reference into the safetensors file
                        and the SHA-256 of that file

``state.json`` names the digest of the tensors it belongs to, so a checkpoint torn by a
crash mid-upload is detected (:class:`CheckpointError`) instead of half-loaded. (The digest
detects tearing, not tampering: whoever can write one file can write both.) Nothing in
either file can run code when read: safetensors holds raw tensors, JSON holds plain data.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tsp_mlflow.training.loop import FitResult

FORMAT_VERSION = 1
TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, tampered with or from another format."""


@dataclass
class TrainingState:
    """Everything that decides how training continues after ``epoch``.

    ``fit`` holds the early-stopping state (best epoch, value and weights) and the metric
    history; ``rng`` the Python, NumPy, torch (CPU and CUDA) and DataLoader-shuffle states.
    """

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]
    fit: FitResult
    extra: dict[str, Any] = field(default_factory=dict)


def capture(
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator | None,
    fit: FitResult,
    device: torch.device | None = None,
) -> TrainingState:
    """A CPU copy of the state at the end of ``epoch`` (training may go on meanwhile)."""
    return TrainingState(
        epoch=epoch,
        model=_cpu(model.state_dict()),
        optimizer=_cpu(optimizer.state_dict()),
        scheduler=_cpu(scheduler.state_dict()) if scheduler is not None else None,
        rng=rng_state(generator, device),
        fit=FitResult(
            best_epoch=fit.best_epoch,
            best_value=fit.best_value,
            best_state=_cpu(fit.best_state),
            epochs_run=fit.epochs_run,
            train_seconds=fit.train_seconds,
            history=[dict(h) for h in fit.history],
            epoch_seconds=list(fit.epoch_seconds),
        ),
    )


def restore(
    state: TrainingState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator | None,
    device: torch.device,
) -> FitResult:
    """Load ``state`` into the live objects; returns the early-stopping state to go on from."""
    model.load_state_dict(state.model, strict=True)
    optimizer.load_state_dict(state.optimizer)  # moves moments to the parameters' device
    if scheduler is not None and state.scheduler is not None:
        scheduler.load_state_dict(state.scheduler)
    set_rng_state(state.rng, generator, device)
    fit = state.fit
    fit.best_state = {k: v.to(device) for k, v in fit.best_state.items()}
    return fit


def rng_state(
    generator: torch.Generator | None, device: torch.device | None = None
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":  # the training GPU's only: a resume
        state["cuda"] = torch.cuda.get_rng_state(device)  # may land on a node with fewer
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(
    state: dict[str, Any], generator: torch.Generator | None, device: torch.device | None = None
) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])


def save(state: TrainingState, folder: str | Path) -> Path:
    """Write ``state`` into ``folder`` (created); tensors first, then the JSON that names
    their digest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tree = {
        "model": state.model,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "rng": state.rng,
        "fit": {
            "best_epoch": state.fit.best_epoch,
            "best_value": state.fit.best_value,
            "best_state": state.fit.best_state,
            "epochs_run": state.fit.epochs_run,
            "train_seconds": state.fit.train_seconds,
            "history": state.fit.history,
            "epoch_seconds": state.fit.epoch_seconds,
        },
        "extra": state.extra,
    }
    tensors: dict[str, torch.Tensor] = {}
    document = _pack(tree, tensors, "")
    tensor_path = folder / TENSORS_FILE
    save_file(tensors, str(tensor_path), metadata={"epoch": str(state.epoch)})
    (folder / STATE_FILE).write_text(
        json.dumps(
            {
                "format": FORMAT_VERSION,
                "epoch": state.epoch,
                "sha256": _sha256(tensor_path),
                "state": document,
            }
        )
    )
    return folder


def load(folder: str | Path) -> TrainingState:
    """Read a checkpoint written by :func:`save`, refusing one that is torn or altered."""
    folder = Path(folder)
    state_path, tensor_path = folder / STATE_FILE, folder / TENSORS_FILE
    if not state_path.is_file() or not tensor_path.is_file():
        raise CheckpointError(f"{folder} is incomplete: it needs {STATE_FILE} and {TENSORS_FILE}")
    try:
        header = json.loads(state_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{state_path} is not valid JSON ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{state_path}: not a format-{FORMAT_VERSION} tsp-mlflow checkpoint")
    if header.get("sha256") != _sha256(tensor_path):
        raise CheckpointError(
            f"{tensor_path} does not match the digest in {STATE_FILE}: the checkpoint was torn "
            "(interrupted while being written) or altered"
        )
    tensors = load_file(str(tensor_path))
    tree = _unpack(header["state"], tensors)
    fit = tree["fit"]
    return TrainingState(
        epoch=int(header["epoch"]),
        model=tree["model"],
        optimizer=tree["optimizer"],
        scheduler=tree["scheduler"],
        rng=tree["rng"],
        fit=FitResult(
            best_epoch=fit["best_epoch"],
            best_value=fit["best_value"],
            best_state=fit["best_state"],
            epochs_run=fit["epochs_run"],
            train_seconds=fit["train_seconds"],
            history=fit["history"],
            epoch_seconds=fit["epoch_seconds"],
        ),
        extra=tree["extra"],
    )


# --- plain-data packing ---------------------------------------------------------------
# JSON has no tuples, no int dict keys (optimizer state is keyed by parameter index) and no
# arrays; these markers keep the exact Python types so that ``load(save(x))`` equals x.


def _pack(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().contiguous().cpu()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        # safetensors has no uint32 (NumPy's Mersenne Twister state): widen integers.
        wide = value.astype(np.int64) if value.dtype.kind in "ui" else value
        tensors[path] = torch.from_numpy(np.ascontiguousarray(wide))
        return {"__ndarray__": path, "dtype": str(value.dtype)}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _pack(v, tensors, f"{path}.{k}") for k, v in value.items()}}
        return {"__items__": [[k, _pack(v, tensors, f"{path}.{k}")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_pack(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__} at {path!r}")


def _unpack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(value["dtype"])
    if "__dict__" in value:
        return {k: _unpack(v, tensors) for k, v in value["__dict__"].items()}
    if "__items__" in value:
        return {k: _unpack(v, tensors) for k, v in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_unpack(v, tensors) for v in value["__tuple__"])
    raise CheckpointError(f"unknown entry in checkpoint: {sorted(value)}")


def _cpu(value: Any) -> Any:
    """A detached CPU copy of every tensor in a nested state dict."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
