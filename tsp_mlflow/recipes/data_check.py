"""``tsp data check``: read a user's dataset files the way training will, and report.

It builds every split through the same ``data/`` config a run uses, so whatever it accepts
trains, and whatever it rejects fails with the loader's own message (file, key, expected
shape).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hydra.utils import instantiate

from tsp_mlflow.config import compose_config, quote
from tsp_mlflow.data.base import MultimodalDataset, Sequences
from tsp_mlflow.data.batch import SPLITS
from tsp_mlflow.errors import UserInputError


def check_dataset(dataset: str, root: str | None, overrides: Sequence[str] = ()) -> str:
    """Load every split of ``dataset`` from ``root`` and describe it as markdown.

    Columns that training reads lazily (posters) are read here in full, so a corrupt
    image fails now rather than in the middle of a run.
    """
    extra = [f"data.root={quote(root)}"] if root else []
    cfg, _ = compose_config("multimodal", [f"data={dataset}"], require_values=False)
    if root and "root" not in cfg.data.keys():  # noqa: SIM118 (`in` skips a ??? value)
        raise UserInputError(f"dataset {dataset!r} is built in and takes no root; drop {root!r}")
    cfg, _ = compose_config("multimodal", [f"data={dataset}", *extra, *overrides])
    build = instantiate(cfg.data.dataset)
    splits: dict[str, MultimodalDataset] = {
        split: build(split=split, modalities=list(cfg.data.modalities)) for split in SPLITS
    }
    warnings = []
    for split, ds in splits.items():
        for m, column in ds.inputs.items():
            if hasattr(column, "digest_into"):  # lazily read: decode every row once
                for i in range(len(column)):
                    column[i]
            if isinstance(column, Sequences) and (empty := int((column.lengths == 0).sum())):
                warnings.append(
                    f"warning: {empty} {split} samples have an empty {m} sequence (length 0); "
                    "encoders read one padding step for them"
                )
    first = splits["train"]
    lines = [
        f"dataset {dataset}: {first.layout}",
        f"source: {first.source}",
        f"task: {cfg.task._target_.rsplit('.', 1)[-1]} ({cfg.data.target} targets)",
        "",
        "| split | rows | " + " | ".join(cfg.data.modalities) + " | labels | sha256 |",
        "|---|---|" + "---|" * len(cfg.data.modalities) + "---|---|",
    ]
    for split, ds in splits.items():
        shapes = ds.sample_shapes()
        cells = " | ".join(shapes[m] for m in cfg.data.modalities)
        lines.append(
            f"| {split} | {len(ds)} | {cells} | {label_balance(ds, cfg.data.target)} | "
            f"{ds.content_digest()[:12]} |"
        )
    return "\n".join(lines + ([""] + warnings if warnings else []))


def label_balance(ds: MultimodalDataset, target: str) -> str:
    y = ds.targets.numpy()
    if target == "class":
        counts = np.bincount(y)
        return " ".join(f"{c}:{n}" for c, n in enumerate(counts) if n)
    if target == "multilabel":
        names = getattr(ds, "target_names", ()) or [str(i) for i in range(y.shape[1])]
        per_label = y.sum(axis=0)
        top = np.argsort(-per_label)[:5]
        empty = int((y.sum(axis=1) == 0).sum())
        return (
            ", ".join(f"{names[i]} {int(per_label[i])}" for i in top)
            + f"; {y.sum(axis=1).mean():.2f} labels/row; {empty} rows without labels"
        )
    return (
        f"negative {int((y < 0).sum())}, neutral {int((y == 0).sum())}, "
        f"positive {int((y > 0).sum())}; mean {y.mean():+.2f} ± {y.std():.2f}"
    )
