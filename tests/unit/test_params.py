"""Configs as params: flattening, secret redaction, the reuse hash and the code version."""

from __future__ import annotations

from tsp_mlflow.tracking.params import REDACTED, code_version, config_hash, flatten, redact


def test_flatten_nests_with_dots_and_lists_as_json() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d": "None",
    }


def test_secret_looking_keys_are_redacted_everywhere() -> None:
    config = {
        "tracking": {"password": "hunter2", "api_key": "k", "token": "t"},
        "optim": {"lr": 0.1},
    }
    flat = flatten(config)
    assert (
        flat["tracking.password"] == flat["tracking.api_key"] == flat["tracking.token"] == REDACTED
    )
    assert flat["optim.lr"] == "0.1"
    assert "hunter2" not in str(redact(config)) and redact(config)["optim"] == {"lr": 0.1}


def test_config_hash_tracks_semantics_only() -> None:
    base = {"optim": {"lr": 0.1}, "tracking": {"experiment": "a"}, "runtime": {"device": "cpu"},
            "data": {"dataset": {"cache_dir": "/x", "seed": 0}}}  # fmt: skip
    moved = {**base, "tracking": {"experiment": "b"}, "runtime": {"device": "cuda"},
             "data": {"dataset": {"cache_dir": "/y", "seed": 0}}}  # fmt: skip
    assert config_hash(base) == config_hash(moved)
    assert config_hash(base) != config_hash({**base, "optim": {"lr": 0.2}})
    assert config_hash(base) != config_hash(
        {**base, "data": {"dataset": {"cache_dir": "/x", "seed": 1}}}
    )


def test_code_version_names_the_package_version() -> None:
    from tsp_mlflow import __version__

    assert code_version().startswith(__version__)
