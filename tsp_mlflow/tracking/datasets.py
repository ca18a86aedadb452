"""Dataset lineage: every split a run reads is logged with ``mlflow.log_input``.

The digest is our own SHA-256 over the split's full content (see
:meth:`~tsp_mlflow.data.base.MultimodalDataset.content_digest`); MLflow's built-in dataset
digests hash only the first 10,000 elements.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import ColSpec, Schema

# MLflow shows short dataset digests; 16 hex characters of SHA-256 tell releases apart,
# and the full digest is kept in the input's tsp.sha256 tag.
DIGEST_CHARS = 16


def log_datasets(datasets: Mapping[str, Any], name: str) -> dict[str, str]:
    """Log each split as an MLflow dataset input with ``context=<split>``.

    Args:
        datasets: split -> a :class:`~tsp_mlflow.data.base.MultimodalDataset`.
        name: the data option (``avdigits``, ``mmimdb_raw``, ...).

    Returns:
        split -> full SHA-256 digest of its content.
    """
    digests: dict[str, str] = {}
    for split, dataset in datasets.items():
        digest = dataset.content_digest()
        digests[split] = digest
        schema = Schema(
            [ColSpec("string", f"{m}: {shape}") for m, shape in dataset.sample_shapes().items()]
        )
        with warnings.catch_warnings():  # "local path matches two local source types"
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(dataset.source)
        meta = MetaDataset(
            source=source,
            name=f"{name}-{split}",
            digest=digest[:DIGEST_CHARS],
            schema=schema,
        )
        mlflow.log_input(
            meta, context=split, tags={"tsp.rows": str(len(dataset)), "tsp.sha256": digest}
        )
    return digests
