"""The torchvision compatibility step: one place, a no-op where torchvision already works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # each test starts a fresh interpreter: the full tier


def run_python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_torchvision_and_its_models_import_after_the_compat_step() -> None:
    out = run_python(
        """
        from tsp_mlflow.compat import ensure_torchvision, torchvision_shim_active
        ensure_torchvision()
        ensure_torchvision()  # idempotent
        import torch, torchvision
        from torchvision.models import resnet18
        y = resnet18(weights=None, num_classes=3).eval()(torch.zeros(1, 3, 32, 32))
        print(tuple(y.shape), torchvision_shim_active())
        """
    )
    shape, _ = out.split(")")
    assert shape == "(1, 3"


def test_shim_is_installed_only_when_torchvision_native_ops_fail_to_load() -> None:
    out = run_python(
        """
        import importlib.util, pathlib, torch
        so = pathlib.Path(importlib.util.find_spec("torchvision").origin).parent / "_C.so"
        try:
            torch.ops.load_library(str(so)); native = True
        except (OSError, RuntimeError):
            native = False
        from tsp_mlflow.compat import ensure_torchvision, torchvision_shim_active
        ensure_torchvision()
        print(native, torchvision_shim_active())
        """
    )
    native, shim = out.split()
    assert shim == str(native != "True")  # no-op exactly when the real library loads


def test_compat_step_does_nothing_once_torchvision_is_imported() -> None:
    out = run_python(
        """
        from tsp_mlflow.compat import ensure_torchvision, torchvision_shim_active
        ensure_torchvision()
        import torchvision
        before = torchvision_shim_active()
        ensure_torchvision()
        print(before == torchvision_shim_active())
        """
    )
    assert out == "True"
