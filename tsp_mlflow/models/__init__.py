"""Encoders, fusion modules, heads and the late-fusion model."""

from tsp_mlflow.models.encoders import ResNetEncoder, SmallCNN
from tsp_mlflow.models.fusion import ConcatFusion
from tsp_mlflow.models.heads import MLPHead
from tsp_mlflow.models.late_fusion import LateFusionModel

__all__ = ["ConcatFusion", "LateFusionModel", "MLPHead", "ResNetEncoder", "SmallCNN"]
