"""Resolved configs as MLflow params, a config hash, secret redaction and the code version."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient

from tsp_mlflow.tracking import schema

MAX_PARAMS_PER_CALL = 100  # MLflow's batch limit
REDACTED = "***"
# Whole words of a key only (split at `.`, `_`, `-` and camelCase): `api_token`,
# `db.password`, `tracking.pw`, `auth`, `access_key`, `clientSecret` and `secrets` are
# secrets; `max_tokens`, `tokenizer`, `keys`, `author` and `bypass_cache` are not.
SECRET_WORDS = (
    "pass",
    "passwd",
    "password",
    "passphrase",
    "pw",
    "pwd",
    "secret",
    "secrets",
    "token",
    "key",
    "apikey",
    "credential",
    "credentials",
    "auth",
    "cookie",
)
_SECRET_WORDS = re.compile(rf"(^|[._-])({'|'.join(SECRET_WORDS)})($|[._-])", re.I)
# Userinfo runs to the last `@` before the host: `me:p@ss@db` hides all of `me:p@ss`.
_URI_USERINFO = re.compile(r"(?<=://)[^/\s]+@")


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_WORDS.search(re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(key))))


# Keys that change where or how fast a run goes, never what it computes: excluded from the
# config hash and from the comparison that decides whether a finished run can be reused.
NON_SEMANTIC_PREFIXES = ("tracking.", "runtime.", "data.dataset.cache_dir", "trainer.checkpoint.")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become JSON; the values of
    secret-looking keys and the credentials in URIs are redacted."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if is_secret_key(key):  # the whole value, even a mapping of parts
            flat[name] = REDACTED
        elif isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(redact(list(value)))
        else:
            flat[name] = redact_uri(str(value))
    return flat


def has_credentials(uri: str) -> bool:
    """Whether a URI carries userinfo (``http://alice:pw@host``)."""
    return bool(_URI_USERINFO.search(uri))


def redact_uri(uri: str) -> str:
    """``postgresql://user:pw@host/db`` -> ``postgresql://***@host/db``, for messages and tags."""
    return _URI_USERINFO.sub(f"{REDACTED}@", uri)


def redact_overrides(overrides: list[str]) -> list[str]:
    """Hydra overrides with the values of secret-looking keys replaced, and credentials
    in URI values (``storage=postgresql://me:pw@db/x``) removed."""
    out = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        secret = sep and is_secret_key(key.lstrip("+~"))
        out.append(f"{key}={REDACTED}" if secret else redact_uri(item))
    return out


def redact(config: Any) -> Any:
    """A copy of a plain config with secret-looking values and URI credentials replaced,
    for artifacts."""
    if isinstance(config, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [redact(v) for v in config]
    if isinstance(config, str):
        return redact_uri(config)
    return config


def semantic_params(params: Mapping[str, str]) -> dict[str, str]:
    """The params that determine a run's result (see ``NON_SEMANTIC_PREFIXES``)."""
    return {k: v for k, v in params.items() if not k.startswith(NON_SEMANTIC_PREFIXES)}


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable hash of what a run computes: its semantic params, sorted."""
    blob = json.dumps(semantic_params(flatten(config)), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def log_config(config: Mapping[str, Any], *, resumed: bool = False) -> None:
    """Log the flattened config as params (in chunks) and as ``config.yaml``, both redacted.

    ``resumed``: the run was started earlier. Only params it lacks are logged (a killed
    process may not have logged them all); the rest keep their first values, since MLflow
    refuses to change a param. Semantic params were checked equal before; the others
    (``runtime.device``, ``tracking.*``, checkpoint cadence) may differ on a resume, and
    ``encoders`` names the exact runs ``pretrained`` once resolved to. ``config.yaml``
    stays as first written.
    """
    items = sorted(flatten(config).items())
    if resumed:
        run = mlflow.active_run()
        have = MlflowClient().get_run(run.info.run_id).data.params if run else {}
        items = [(k, v) for k, v in items if k not in have and k != "encoders"]
    for i in range(0, len(items), MAX_PARAMS_PER_CALL):
        mlflow.log_params(dict(items[i : i + MAX_PARAMS_PER_CALL]))
    if not resumed:
        text = yaml.safe_dump(redact(dict(config)), sort_keys=False, default_flow_style=None)
        mlflow.log_text(text, schema.CONFIG_ARTIFACT)


@cache
def code_version() -> str:
    """Package version plus a digest of the code and configs that determine a run's result.

    Runs are only reused when this matches, so editing ``tsp_mlflow/`` or ``conf/`` (tracked
    or not, with or without git) retrains.
    """
    from tsp_mlflow.version import __version__

    root = Path(__file__).resolve().parents[2]
    return f"{__version__}+src.{source_digest(root / 'tsp_mlflow', root / 'conf')}"


def source_digest(*folders: Path) -> str:
    """Hash of every ``.py`` and ``.yaml`` file under ``folders`` (paths and contents)."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(folder.parent)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
