"""Encoders, fusion modules, heads and the late-fusion model."""

from tsp_mlflow.models.encoders import ResNetEncoder, SmallCNN
from tsp_mlflow.models.fusion import (
    AttentionFusion,
    AvgFusion,
    ConcatFusion,
    GatedFusion,
    MaxFusion,
    SumFusion,
)
from tsp_mlflow.models.heads import MLPHead
from tsp_mlflow.models.late_fusion import LateFusionModel

__all__ = [
    "AttentionFusion",
    "AvgFusion",
    "ConcatFusion",
    "GatedFusion",
    "LateFusionModel",
    "MLPHead",
    "MaxFusion",
    "ResNetEncoder",
    "SmallCNN",
    "SumFusion",
]
