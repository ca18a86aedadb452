"""Configs as params: flattening, secret redaction, the reuse hash and the code version."""

from __future__ import annotations

from pathlib import Path

from tsp_mlflow.tracking.params import (
    REDACTED,
    code_version,
    config_hash,
    flatten,
    redact,
    redact_overrides,
    redact_uri,
    source_digest,
)


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


def test_only_whole_secret_segments_are_redacted() -> None:
    flat = flatten(
        {
            "max_tokens": 1,
            "tokenizer": 2,
            "bypass_cache": 3,
            "passes": 4,
            "api_token": 5,
            "db": {"password": 6},
            "aws_secret_access_key": 7,
            "private_key": 8,
        }
    )
    assert [k for k, v in flat.items() if v == REDACTED] == [
        "api_token",
        "db.password",
        "aws_secret_access_key",
        "private_key",
    ]


def test_uris_and_overrides_lose_their_secrets() -> None:
    assert (
        redact_uri("postgresql+psycopg2://me:pw@db:5432/mlflow")
        == "postgresql+psycopg2://***@db:5432/mlflow"
    )
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_overrides(["+tracking.api_token=abc", "optim.lr=1e-3", "debug=tiny"]) == [
        "+tracking.api_token=***",
        "optim.lr=1e-3",
        "debug=tiny",
    ]


def test_source_digest_changes_with_any_code_or_config_file(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text("lr: 1\n")
    before = source_digest(tmp_path / "pkg", tmp_path / "conf")
    (tmp_path / "conf" / "c.yaml").write_text("lr: 2\n")
    after = source_digest(tmp_path / "pkg", tmp_path / "conf")
    (tmp_path / "pkg" / "new.py").write_text("")  # untracked files count too
    assert len({before, after, source_digest(tmp_path / "pkg", tmp_path / "conf")}) == 3
    (tmp_path / "pkg" / "notes.txt").write_text("ignored")
    assert source_digest(tmp_path / "pkg", tmp_path / "conf") == source_digest(
        tmp_path / "pkg", tmp_path / "conf"
    )


def test_config_hash_tracks_semantics_only() -> None:
    base = {
        "optim": {"lr": 0.1},
        "tracking": {"experiment": "a"},
        "runtime": {"device": "cpu"},
        "data": {"dataset": {"cache_dir": "/x", "seed": 0}},
    }
    moved = {
        **base,
        "tracking": {"experiment": "b"},
        "runtime": {"device": "cuda"},
        "data": {"dataset": {"cache_dir": "/y", "seed": 0}},
    }
    assert config_hash(base) == config_hash(moved)
    assert config_hash(base) != config_hash({**base, "optim": {"lr": 0.2}})
    assert config_hash(base) != config_hash(
        {**base, "data": {"dataset": {"cache_dir": "/x", "seed": 1}}}
    )


def test_code_version_names_the_package_version() -> None:
    from tsp_mlflow import __version__

    root = Path(__file__).resolve().parents[2]
    assert (
        code_version() == f"{__version__}+src.{source_digest(root / 'tsp_mlflow', root / 'conf')}"
    )


def test_credentials_in_override_values_are_redacted() -> None:
    from tsp_mlflow.tracking.params import redact_overrides

    assert redact_overrides(["storage=postgresql+psycopg2://me:pw@db:5432/optuna", "a=1"]) == [
        "storage=postgresql+psycopg2://***@db:5432/optuna",
        "a=1",
    ]
