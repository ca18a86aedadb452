"""What pretraining does to representations (the thesis's advanced objective 3).

After a fusion run, each encoder embeds the train and test splits (complete data). The
test embeddings are saved as ``representations/<modality>.npy`` (with
``representations/targets.npy``) for the analysis's 2-D projections, and a linear probe
trained on the train embeddings is scored on the test ones: ``probe/<modality>/<metric>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.tracking.schema import REPRESENTATIONS_DIR
from tsp_mlflow.training.loop import to_device
from tsp_mlflow.training.tasks import Task


@torch.no_grad()
def embed(
    model: LateFusionModel, loader: DataLoader, device: torch.device, task: Task
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """modality -> (N, D) embeddings, and the (N, ...) targets the task sees."""
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {m: [] for m in model.modalities}
    targets = []
    for batch in loader:
        batch = to_device(batch, device)
        for m, z in model.encode(batch["inputs"]).items():
            chunks[m].append(z.float().cpu().numpy())
        targets.append(task.target(batch["target"]).cpu().numpy())
    return {m: np.concatenate(c) for m, c in chunks.items()}, np.concatenate(targets)


def probe(
    task: Task, train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray
) -> dict[str, float]:
    """A linear probe on frozen embeddings, scored with the task's main metric."""
    if task.target_kind == "multilabel":
        keep = y_train.std(axis=0) > 0  # a label never (or always) seen cannot be probed
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=500)))
        clf.fit(train, y_train[:, keep])
        pred = np.zeros_like(y_test)
        pred[:, keep] = clf.predict(test)
        return {"f1_micro": float(f1_score(y_test, pred, average="micro", zero_division=0))}
    if task.num_outputs == 1:  # regression
        reg = make_pipeline(StandardScaler(), Ridge()).fit(train, y_train)
        return {"mae": float(mean_absolute_error(y_test, reg.predict(test)))}
    if len(np.unique(y_train)) < 2:
        return {"accuracy": float("nan")}
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(train, y_train)
    return {"accuracy": float(accuracy_score(y_test, clf.predict(test)))}


def log_representations(
    model: LateFusionModel, loaders: dict[str, DataLoader], device: torch.device, task: Task
) -> dict[str, float]:
    """Save test embeddings per encoder and log linear-probe metrics; returns the metrics."""
    train, y_train = embed(model, loaders["train"], device, task)
    test, y_test = embed(model, loaders["test"], device, task)
    metrics = {
        f"probe/{m}/{name}": value
        for m in model.modalities
        for name, value in probe(task, train[m], y_train, test[m], y_test).items()
    }
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory(prefix="tsp-repr-") as tmp:
        for m, z in test.items():
            np.save(Path(tmp) / f"{m}.npy", z.astype(np.float32))
        np.save(Path(tmp) / "targets.npy", y_test)
        mlflow.log_artifacts(tmp, REPRESENTATIONS_DIR)
    return metrics
