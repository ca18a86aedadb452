"""Training diagnostics every N steps: gradient and weight norms per layer group, and
activation statistics (the thesis config's ``monitoring`` section; ``conf/monitoring/``).

Values are buffered as MLflow metrics with the global step and sent with the epoch's
metrics (:class:`~tsp_mlflow.tracking.epoch_log.EpochLogger`), so monitoring adds no
round trip to the tracking server. Layer groups are the model's module paths: each
encoder (``encoders.audio``), ``fusion``, ``head``, unimodal heads, ``predictor``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from mlflow.entities import Metric
from mlflow.utils.time import get_current_time_millis
from omegaconf import DictConfig
from torch import nn

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking.schema import MONITOR_PREFIX as PREFIX


@dataclass(frozen=True)
class MonitoringSettings:
    enabled: bool = True
    every_n_steps: int = 50
    gradient_norm: bool = True
    weight_norm: bool = True
    activations: bool = True
    system_metrics: bool = False
    system_metrics_interval_s: float = 10.0

    @classmethod
    def from_config(cls, node: DictConfig | None) -> MonitoringSettings:
        """The ``monitoring`` config group, checked (absent: monitoring off)."""
        if node is None:
            return cls(enabled=False)
        settings = cls(**{k: node[k] for k in cls.__dataclass_fields__ if k in node})
        every = settings.every_n_steps
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserInputError(
                f"monitoring.every_n_steps must be a positive integer, got {every!r}; e.g. "
                "monitoring.every_n_steps=50 (or --disable-monitoring)"
            )
        interval = settings.system_metrics_interval_s
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise UserInputError(
                "monitoring.system_metrics_interval_s must be a positive number of seconds, "
                f"got {interval!r}"
            )
        return settings


def layer_groups(model: nn.Module) -> dict[str, nn.Module]:
    """``encoders.audio``, ``fusion``, ``head``, ...: the model's top-level parts, with a
    ModuleDict (one entry per modality) split into its entries."""
    groups: dict[str, nn.Module] = {}
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleDict):
            groups.update({f"{name}.{key}": sub for key, sub in child.items()})
        else:
            groups[name] = child
    return groups


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([t.float().norm() for t in tensors])))


class TrainingMonitor:
    """Call :meth:`step` after each backward pass; :meth:`drain` hands over the metrics
    collected since the last call."""

    def __init__(self, model: nn.Module, settings: MonitoringSettings) -> None:
        self.settings = settings
        self.groups = layer_groups(model)
        self._pending: list[Metric] = []
        self._fused: torch.Tensor | None = None
        self._watching = False
        fusion = getattr(model, "fusion", None)
        self._hook = (
            fusion.register_forward_hook(self._keep_fusion_output)
            if settings.activations and isinstance(fusion, nn.Module)
            else None
        )

    def due(self, global_step: int) -> bool:
        """Whether this step is sampled (the first step of a run, then every N)."""
        return (global_step - 1) % self.settings.every_n_steps == 0

    @contextlib.contextmanager
    def watching(self, global_step: int) -> Iterator[None]:
        """Around a due step's forward pass: the fusion output is kept for :meth:`step`."""
        self._watching = self.due(global_step) and self._hook is not None
        try:
            yield
        finally:
            self._watching = False

    def _keep_fusion_output(self, module: nn.Module, args: object, output: object) -> None:
        if self._watching and isinstance(output, torch.Tensor):
            self._fused = output.detach()

    @torch.no_grad()
    def step(self, global_step: int, feats: dict[str, torch.Tensor]) -> None:
        """Record this step's statistics if it is due (after backward, before the
        optimizer step, so the gradients are this step's)."""
        if not self.due(global_step):
            return
        values: dict[str, float] = {}
        for name, group in self.groups.items():
            params = [p for p in group.parameters() if p.requires_grad]
            grads = [p.grad for p in params if p.grad is not None]
            if self.settings.gradient_norm and grads:
                values[f"{PREFIX}/grad_norm/{name}"] = _norm(grads)
            if self.settings.weight_norm and params:
                values[f"{PREFIX}/weight_norm/{name}"] = _norm([p.detach() for p in params])
        if self.settings.activations:
            activations = {f"encoders.{m}": x for m, x in feats.items()}
            if self._fused is not None:
                activations["fusion"] = self._fused
            for name, x in activations.items():
                x = x.detach().float()
                values.update(
                    {
                        f"{PREFIX}/activation/{name}/mean": float(x.mean()),
                        f"{PREFIX}/activation/{name}/std": float(x.std()) if x.numel() > 1 else 0.0,
                        f"{PREFIX}/activation/{name}/abs_max": float(x.abs().max()),
                        f"{PREFIX}/activation/{name}/zero_fraction": float((x == 0).float().mean()),
                    }
                )
        self._fused = None
        now = get_current_time_millis()
        self._pending.extend(Metric(k, v, now, global_step) for k, v in values.items())

    def drain(self) -> list[Metric]:
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
