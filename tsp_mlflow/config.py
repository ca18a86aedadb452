"""Compose, validate and serialise the Hydra configs in ``conf/``.

The typed constructor signatures are the schema: every ``_target_`` in a composed config
is bound against its constructor before any run starts, so a typo fails in seconds.
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from tsp_mlflow.errors import UserInputError


def config_dir() -> Path:
    """``$TSP_CONFIG_DIR`` or the repository's ``conf/`` (the package is installed editable)."""
    env = os.environ.get("TSP_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not path.is_dir():
        raise UserInputError(
            f"config folder {path} not found; install the project with `pip install -e .` "
            "from its checkout, or set TSP_CONFIG_DIR"
        )
    return path


def user_config_dirs() -> list[Path]:
    """``$TSP_CONFIG_PATH``: the user's own config folders (``os.pathsep``-separated),
    searched after ``conf/``, e.g. a ``data/mydata.yaml`` for a dataset of one's own."""
    dirs = [
        Path(p).expanduser() for p in os.environ.get("TSP_CONFIG_PATH", "").split(os.pathsep) if p
    ]
    for path in dirs:
        if not path.is_dir():
            raise UserInputError(
                f"TSP_CONFIG_PATH names {path}, which is not a folder; it lists folders of "
                "your own configs (e.g. one holding data/mydata.yaml), separated by "
                f"{os.pathsep!r}"
            )
    return dirs


def _search_path() -> list[str]:
    """The Hydra override that adds :func:`user_config_dirs` (none when unset)."""
    dirs = user_config_dirs()
    return [f"hydra.searchpath=[{','.join(f'file://{p.resolve()}' for p in dirs)}]"] if dirs else []


def group_options(group: str) -> list[str]:
    """The choices of a config group, e.g. ``group_options("data") == ["avdigits"]``."""
    folders = [config_dir(), *user_config_dirs()]
    return sorted({p.stem for folder in folders for p in (folder / group).glob("*.yaml")})


def split_overrides(text: str) -> list[str]:
    """Split an ``overrides`` parameter (shell-quoted by ``mlflow run``) into Hydra overrides."""
    try:
        return shlex.split(text or "")
    except ValueError as err:
        raise UserInputError(f"cannot parse overrides={text!r}: {err}") from None


def quote(value: str) -> str:
    """Quote a string value for a Hydra override (values may hold ``=`` ``,`` ``:`` ``/``)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def compose_config(
    name: str, overrides: Sequence[str] = (), *, require_values: bool = True
) -> tuple[DictConfig, dict[str, str]]:
    """Compose ``conf/<name>.yaml`` with overrides, resolve it and check every ``_target_``.

    Returns:
        The resolved config, and the chosen option per config group (e.g.
        ``{"model/fusion": "concat"}``), which runs record as tags.
    """
    for item in overrides:
        key = str(item).lstrip("+~").partition("=")[0]
        if "=" not in str(item) or not key.strip():
            raise UserInputError(
                f"override {item!r} is not key=value; write e.g. trainer.epochs=3 (and quote "
                "values with spaces)"
            )
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(
                config_name=name, overrides=[*_search_path(), *overrides], return_hydra_config=True
            )
        choices = {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items() if v is not None}
        with open_dict(cfg):
            del cfg["hydra"]
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserInputError(_explain(err, name)) from None
    if require_values:  # off while overrides are routed one at a time (data.root comes later)
        check_missing(cfg)
    check_targets(cfg)
    return cfg, choices


def check_missing(cfg: DictConfig) -> None:
    """Mandatory values (``???``) left unset, e.g. ``data.root`` for real datasets."""
    # data.dataset.* interpolate data.*: report the key the user sets, once.
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("data.dataset."))
    if missing:
        hints = {
            "data.root": "the folder holding the dataset's files, e.g. data.root=/data/avmnist"
        }
        details = "; ".join(f"{k} ({hints.get(k, 'set it as an override')})" for k in missing)
        raise UserInputError(
            f"missing value(s): {details}. Pass them in overrides, e.g. "
            f"-P overrides='{missing[0]}=...'"
        )


def check_targets(cfg: Any, path: str = "") -> None:
    """Bind each ``_target_`` node's keys to its constructor's signature."""
    for node, where in _target_nodes(cfg, path):
        target = node["_target_"]
        try:
            obj = get_object(target)
        except Exception:  # hydra raises several types for an unimportable path
            raise UserInputError(f"{where}._target_={target!r} cannot be imported") from None
        # Keys only: a value may still be missing (``???``) while overrides are routed.
        kwargs = dict.fromkeys(k for k in node if not str(k).startswith("_"))
        try:
            inspect.signature(obj).bind_partial(**kwargs)
        except TypeError:
            params = [p for p in inspect.signature(obj).parameters if p not in ("self",)]
            unknown = sorted(set(kwargs) - set(params))
            raise UserInputError(
                f"{where}: {target} does not accept {', '.join(unknown) or kwargs}; "
                f"valid keys: {', '.join(params)}"
            ) from None


def to_plain(cfg: Any) -> Any:
    """A config node as plain Python (dicts and lists, resolved); other values unchanged."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _target_nodes(node: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(node, (DictConfig, dict)):
        if "_target_" in node:
            yield node, path or "<root>"
        for key in node:
            if isinstance(node, DictConfig) and OmegaConf.is_missing(node, key):
                continue
            yield from _target_nodes(node[key], f"{path}.{key}" if path else str(key))


def _did_you_mean(key: str, name: str) -> str:
    """A close existing key, else how to add a new one (Hydra's ``+key=value``)."""
    import difflib

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        known = _leaf_keys(compose(config_name=name, overrides=_search_path()))
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if close:
        return f"; did you mean {close[0]}?"
    parent = key.rpartition(".")[0]
    siblings = sorted(
        {k[len(parent) + 1 :].split(".")[0] for k in known if k.startswith(f"{parent}.")}
    )
    if parent and siblings:
        return f"; {parent} has {', '.join(siblings)}"
    return f"; see conf/{name}.yaml for the keys it has"


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return [prefix.rstrip(".")]
    keys: list[str] = []
    for k in node:
        keys += _leaf_keys(node._get_node(k), f"{prefix}{k}.")
    return keys


def _explain(err: Exception, name: str) -> str:
    cause = err if str(err).strip() else (err.__cause__ or err)
    message = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    cause_text = str(err.__cause__ or "")
    if "is not in struct" in cause_text and "full_key: " in cause_text:  # an unknown key
        key = cause_text.split("full_key: ", 1)[1].split()[0]
        return f"unknown config key {key!r} for {name}{_did_you_mean(key, name)}"
    groups = (
        "data",
        "task",
        "model/fusion",
        "model/encoder",
        "model/head",
        "optim",
        "scheduler",
        "trainer",
        "gradient",
        "imputation",
        "objective",
        "experiment",
        "debug",
    )
    if message.startswith("Interpolation key 'data."):
        key = message.split("'")[1]
        return (
            f"{message}: an option (often task=...) needs {key}, which this dataset does not "
            "define; pick a task for this dataset (conf/task/) or set the key"
        )
    for group in groups:
        if f"'{group}/" in message or f"'{group}'" in message or f"group {group}" in message:
            return f"{message}. Valid {group} choices: {', '.join(group_options(group))}"
    return f"invalid configuration for {name}: {message}"
