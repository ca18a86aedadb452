"""Datasets (one shared batch contract), missing-modality patterns and the built-in generator."""

from tsp_mlflow.data.avmnist import AVDigitsDataset, AVMNISTDataset
from tsp_mlflow.data.batch import Batch, all_patterns, pattern_mask, pattern_name

__all__ = [
    "AVDigitsDataset",
    "AVMNISTDataset",
    "Batch",
    "all_patterns",
    "pattern_mask",
    "pattern_name",
]
