"""Resolved configs as MLflow params, a config hash, secret redaction and the code version."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import yaml

from tsp_mlflow.tracking import schema

MAX_PARAMS_PER_CALL = 100  # MLflow's batch limit
REDACTED = "***"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential|private[_-]?key", re.I)
# Keys that change where or how fast a run goes, never what it computes: excluded from the
# config hash and from the comparison that decides whether a finished run can be reused.
NON_SEMANTIC_PREFIXES = ("tracking.", "runtime.", "data.dataset.cache_dir")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become JSON; secret-looking keys redacted."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif _SECRET_KEY.search(str(key)):
            flat[name] = REDACTED
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


def redact(config: Any) -> Any:
    """A copy of a plain config with secret-looking values replaced, for artifacts."""
    if isinstance(config, Mapping):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    return config


def semantic_params(params: Mapping[str, str]) -> dict[str, str]:
    """The params that determine a run's result (see ``NON_SEMANTIC_PREFIXES``)."""
    return {k: v for k, v in params.items() if not k.startswith(NON_SEMANTIC_PREFIXES)}


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable hash of what a run computes: its semantic params, sorted."""
    blob = json.dumps(semantic_params(flatten(config)), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def log_config(config: Mapping[str, Any]) -> None:
    """Log the flattened config as params (in chunks) and as ``config.yaml``, both redacted."""
    items = sorted(flatten(config).items())
    for i in range(0, len(items), MAX_PARAMS_PER_CALL):
        mlflow.log_params(dict(items[i : i + MAX_PARAMS_PER_CALL]))
    text = yaml.safe_dump(redact(dict(config)), sort_keys=False, default_flow_style=None)
    mlflow.log_text(text, schema.CONFIG_ARTIFACT)


@cache
def code_version() -> str:
    """Package version plus git commit, with a digest of uncommitted changes when dirty.

    Runs are only reused when this matches, so editing the code retrains.
    """
    from tsp_mlflow import __version__

    repo = Path(__file__).resolve().parents[2]
    try:
        commit = _git(repo, "rev-parse", "--short=12", "HEAD")
        diff = _git(repo, "diff", "HEAD", "--", "tsp_mlflow", "conf")
    except (OSError, subprocess.SubprocessError):
        return __version__
    if diff:
        return f"{__version__}+g{commit}.dirty{hashlib.sha256(diff.encode()).hexdigest()[:8]}"
    return f"{__version__}+g{commit}"


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()
