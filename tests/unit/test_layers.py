"""The import graph runs one way: each layer imports only itself and the layers below it.

The graph is read from the source (every ``import``, module-level or inside a function), so a
lazy import that runs upward counts as much as an eager one. docs/architecture.md draws it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top. A module belongs to the first layer whose prefix names it or a package above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        ("tsp_mlflow.errors", "tsp_mlflow.version", "tsp_mlflow.config", "tsp_mlflow.run_flags"),
    ),
    ("tracking", ("tsp_mlflow.tracking",)),
    ("analysis", ("analysis",)),
    ("data", ("tsp_mlflow.data",)),
    ("models", ("tsp_mlflow.compat", "tsp_mlflow.models")),
    ("training", ("tsp_mlflow.training",)),
    ("api", ("tsp_mlflow.api",)),
    ("recipes", ("tsp_mlflow.recipes", "tsp_mlflow.multirun")),
    ("commands", ("tsp_mlflow.commands", "tsp_mlflow.cli", "tsp_mlflow.reference")),
    # The entry points and the package facade (its lazy ``load_encoder``) sit on top.
    ("entry points", ("tsp_mlflow.__main__", "tsp_mlflow")),
]
TORCH_FREE = ("base", "tracking", "analysis")
EXACT_ONLY = {"tsp_mlflow", "tsp_mlflow.__main__"}


def layer_of(module: str) -> int | None:
    for index, (_, prefixes) in reversed(list(enumerate(LAYERS))):
        for prefix in prefixes:
            if module == prefix or (prefix not in EXACT_ONLY and module.startswith(prefix + ".")):
                return index
    return None


def modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("tsp_mlflow/**/*.py"), *ROOT.glob("analysis/**/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            out.append((node.lineno, base))
            # ``from tsp_mlflow.training import checkpoint`` imports the submodule.
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def violations() -> list[str]:
    known = modules()
    found = []
    for module, path in sorted(known.items()):
        mine = layer_of(module)
        assert mine is not None, f"{module} belongs to no layer: add it to LAYERS"
        for line, target in imports_of(module, path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.split(".")[0] == "torch" and LAYERS[mine][0] in TORCH_FREE:
                found.append(f"{where}: {LAYERS[mine][0]} is torch-free but imports {target}")
            if target not in known:
                continue  # a third-party module, or a name imported from a module
            theirs = layer_of(target)
            assert theirs is not None, f"{target} belongs to no layer: add it to LAYERS"
            if theirs > mine:
                found.append(
                    f"{where}: {module} ({LAYERS[mine][0]}) imports {target} "
                    f"({LAYERS[theirs][0]}), a layer above it"
                )
    return found


def test_every_import_runs_down_the_layers() -> None:
    assert violations() == []


def test_the_checker_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule must be able to fail: an upward and a torch import in a copy of the tree.
    fake = tmp_path / "tsp_mlflow" / "tracking"
    fake.mkdir(parents=True)
    (tmp_path / "analysis").mkdir()
    (tmp_path / "tsp_mlflow" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text(
        "def f():\n    from tsp_mlflow.training import loop\n    import torch\n"
    )
    (tmp_path / "tsp_mlflow" / "training").mkdir()
    (tmp_path / "tsp_mlflow" / "training" / "__init__.py").write_text("")
    (tmp_path / "tsp_mlflow" / "training" / "loop.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = violations()
    assert any("imports tsp_mlflow.training.loop (training), a layer above" in v for v in found)
    assert any("torch-free but imports torch" in v for v in found)


@pytest.mark.slow
def test_the_torch_free_layers_import_without_torch() -> None:
    # What the graph promises, checked in a fresh interpreter: every module of the
    # torch-free layers (the CLI's analysis and tracking side) imports without torch.
    code = (
        "import importlib, pkgutil, sys, analysis, tsp_mlflow.tracking\n"
        "for package in (analysis, tsp_mlflow.tracking):\n"
        "    for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            importlib.import_module(m.name)\n"
        "import tsp_mlflow.config, tsp_mlflow.errors\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
