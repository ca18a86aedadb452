"""The formatter wins: the code is what `ruff format` writes, and `ruff check` is clean.

Run as a test (not only by `make lint`) so that CI holds every commit to it.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["tsp_mlflow", "analysis", "tests", "bench"]


def ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed; it is a dev dependency: pip install -e '.[dev]'")
    return found


def test_the_code_is_formatted_by_ruff() -> None:
    done = subprocess.run(
        [ruff(), "format", "--check", *SOURCES], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, f"run `ruff format {' '.join(SOURCES)}`:\n{done.stdout}"


def test_ruff_check_is_clean() -> None:
    done = subprocess.run([ruff(), "check", *SOURCES], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_formatter_opt_outs_are_kept_for_aligned_tables_only() -> None:
    """`# fmt: skip` only where the alignment carries meaning; each one is a reviewed
    exception, so the count may only go down."""
    markers = [
        f"{path.relative_to(REPO)}:{token.start[0]}"
        for folder in SOURCES
        for path in sorted((REPO / folder).rglob("*.py"))
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        if token.type == tokenize.COMMENT and re.search(r"fmt:\s*(skip|off)", token.string)
    ]
    assert len(markers) <= ALLOWED_OPT_OUTS, markers


ALLOWED_OPT_OUTS = 0
