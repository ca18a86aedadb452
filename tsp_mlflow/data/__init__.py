"""Datasets (one shared batch contract), missing-modality patterns and the built-in generator."""

from tsp_mlflow.data.avmnist import AVDigitsDataset, AVMNISTCSVDataset, AVMNISTDataset
from tsp_mlflow.data.base import MultimodalDataset, Sequences
from tsp_mlflow.data.batch import Batch, all_patterns, pattern_mask, pattern_name
from tsp_mlflow.data.mmimdb import MMIMDbDataset, MMIMDbRawDataset
from tsp_mlflow.data.mosi import MOSIDataset

__all__ = [
    "AVDigitsDataset",
    "AVMNISTCSVDataset",
    "AVMNISTDataset",
    "Batch",
    "MMIMDbDataset",
    "MMIMDbRawDataset",
    "MOSIDataset",
    "MultimodalDataset",
    "Sequences",
    "all_patterns",
    "pattern_mask",
    "pattern_name",
]
