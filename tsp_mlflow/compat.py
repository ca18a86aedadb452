"""Make torchvision importable next to a CPU build of torch that it was not built for.

The only torchvision wheel that pairs with torch 2.13 here is a CUDA build. Its compiled
``_C.so`` fails to load against CPU torch, and ``import torchvision`` then dies with
``operator torchvision::nms does not exist`` while registering fake kernels. transformers
imports torchvision when it is installed, so it breaks as well.

The fix: load ``_C.so`` when it loads (every healthy install, CUDA included: then this is a
no-op), and otherwise declare the two operator schemas that torchvision's Python side
expects. Models, transforms and transformers then work; ``torchvision.ops.nms`` and the
``torchvision.io`` codecs stay unavailable, so the project reads images with PIL.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

# Kept alive for the life of the process: dropping the Library object unregisters the ops.
_SHIM_LIBRARY: torch.library.Library | None = None
_SHIM_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def torchvision_shim_active() -> bool:
    """True when the schema shim had to be installed (torchvision's ``_C.so`` did not load)."""
    return _SHIM_LIBRARY is not None


def ensure_torchvision() -> None:
    """Prepare torch so that ``import torchvision`` succeeds. Idempotent; call before importing it."""
    global _SHIM_LIBRARY
    if "torchvision" in sys.modules or _SHIM_LIBRARY is not None:
        return
    if _has_op("nms"):  # another component already registered torchvision's ops
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return  # not installed: the import error that follows is the honest one
    try:
        torch.ops.load_library(str(Path(spec.origin).parent / "_C.so"))
        return
    except (OSError, RuntimeError):
        pass
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SHIM_SCHEMAS:
        library.define(schema)
    _SHIM_LIBRARY = library


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True
