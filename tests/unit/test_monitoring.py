"""Monitoring: per-layer-group gradient/weight norms and activation statistics every N
steps, its settings checked up front, and MLflow's system metrics on one switch."""

from __future__ import annotations

import time

import mlflow
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.orchestrator import system_metrics
from tsp_mlflow.training.monitoring import MonitoringSettings, TrainingMonitor, layer_groups


class Fused(nn.Module):
    """The shape of a LateFusionModel: named encoders, a fusion, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({"audio": nn.Linear(4, 3), "image": nn.Linear(5, 3)})
        self.fusion = nn.ReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, audio: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, dict]:
        feats = {"audio": self.encoders["audio"](audio), "image": self.encoders["image"](image)}
        return self.head(self.fusion(feats["audio"] + feats["image"])), feats


def run_steps(model: Fused, monitor: TrainingMonitor, steps: int) -> None:
    torch.manual_seed(0)
    for step in range(1, steps + 1):
        model.zero_grad()
        with monitor.watching(step):
            logits, feats = model(torch.randn(8, 4), torch.randn(8, 5))
        logits.sum().backward()
        monitor.step(step, feats)


def test_layer_groups_split_the_encoders_by_modality() -> None:
    assert list(layer_groups(Fused())) == ["encoders.audio", "encoders.image", "fusion", "head"]


def test_every_nth_step_is_sampled_and_the_norms_are_the_groups_own() -> None:
    model = Fused()
    monitor = TrainingMonitor(model, MonitoringSettings(every_n_steps=3))
    run_steps(model, monitor, 7)
    metrics = monitor.drain()
    assert sorted({m.step for m in metrics}) == [1, 4, 7]
    assert monitor.drain() == []  # handed over once
    last = {m.key: m.value for m in metrics if m.step == 7}
    head_grads = [p.grad for p in model.head.parameters()]  # still step 7's gradients
    expected = torch.sqrt(sum((g**2).sum() for g in head_grads))
    assert last["monitor/grad_norm/head"] == pytest.approx(float(expected), rel=1e-5)
    weights = torch.sqrt(sum((p.detach() ** 2).sum() for p in model.encoders["audio"].parameters()))
    assert last["monitor/weight_norm/encoders.audio"] == pytest.approx(float(weights), rel=1e-5)
    assert "monitor/grad_norm/fusion" not in last  # no parameters, nothing to report
    # The fusion output is a ReLU's: its zero fraction is the share of clipped units.
    assert 0 < last["monitor/activation/fusion/zero_fraction"] < 1
    assert last["monitor/activation/fusion/mean"] >= 0
    assert {"mean", "std", "abs_max", "zero_fraction"} == {
        k.rsplit("/", 1)[1] for k in last if k.startswith("monitor/activation/encoders.image/")
    }
    monitor.close()


def test_frozen_groups_and_switched_off_statistics_are_not_logged() -> None:
    model = Fused()
    model.encoders["image"].requires_grad_(False)
    settings = MonitoringSettings(every_n_steps=1, weight_norm=False, activations=False)
    monitor = TrainingMonitor(model, settings)
    run_steps(model, monitor, 1)
    keys = {m.key for m in monitor.drain()}
    assert keys == {"monitor/grad_norm/encoders.audio", "monitor/grad_norm/head"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("every_n_steps", 0, r"monitoring.every_n_steps must be a positive integer, got 0"),
        ("every_n_steps", True, r"positive integer, got True"),
        ("system_metrics_interval_s", -1, r"system_metrics_interval_s must be a positive"),
    ],
)
def test_bad_settings_are_refused_by_name(key: str, value: object, message: str) -> None:
    node = OmegaConf.create({"enabled": True, key: value})
    with pytest.raises(UserInputError, match=message):
        MonitoringSettings.from_config(node)


def test_no_monitoring_section_means_monitoring_off() -> None:
    assert MonitoringSettings.from_config(None).enabled is False


@pytest.mark.slow
def test_system_metrics_are_sampled_into_the_run_while_switched_on(tracking_uri: str) -> None:
    settings = MonitoringSettings(system_metrics=True, system_metrics_interval_s=0.2)
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        with system_metrics(run_id, settings):
            deadline = time.monotonic() + 60
            while not any(k.startswith("system/") for k in mlflow.get_run(run_id).data.metrics):
                assert time.monotonic() < deadline, "no system metric was logged"
                time.sleep(0.2)
    keys = set(mlflow.get_run(run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys
    with mlflow.start_run() as run, system_metrics(run.info.run_id, MonitoringSettings()):
        pass  # off by default: nothing sampled
    assert not any(k.startswith("system/") for k in mlflow.get_run(run.info.run_id).data.metrics)
