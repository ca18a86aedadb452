"""The `encoders` parameter: accepted forms, clear errors, and condition names."""

from __future__ import annotations

import pytest

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.recipes.encoder_sources import condition_name, parse_encoder_sources

MODS = ("audio", "image")


def test_shorthands_expand_to_every_modality() -> None:
    assert parse_encoder_sources("scratch", MODS, "avdigits") == {
        "audio": "scratch",
        "image": "scratch",
    }
    assert parse_encoder_sources("pretrained", MODS, "avdigits") == {
        "audio": "models:/avdigits-audio-encoder@champion",
        "image": "models:/avdigits-image-encoder@champion",
    }


def test_per_modality_lists_accept_every_uri_form() -> None:
    sources = parse_encoder_sources(
        "image=models:/avdigits-image-encoder/3, audio=run:abc123", MODS, "avdigits"
    )
    assert sources == {"audio": "run:abc123", "image": "models:/avdigits-image-encoder/3"}
    assert parse_encoder_sources("audio=runs:/abc/encoder", MODS, "avdigits")["image"] == "scratch"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("audio", "item 'audio' is not <modality>=<source>"),
        ("audio=", "item 'audio=' is not <modality>=<source>"),
        ("text=scratch", "unknown modality 'text'; dataset 'avdigits' has audio, image"),
        ("audio=scratch,audio=pretrained", "gives modality 'audio' twice"),
        ("audio=s3://bucket/enc", "'s3://bucket/enc' is not a valid source"),
        ("image=models:/x@", "'models:/x@' is not a valid source"),
    ],
)
def test_malformed_encoders_name_the_problem_and_the_valid_forms(text: str, message: str) -> None:
    with pytest.raises(UserInputError, match="encoders=") as err:
        parse_encoder_sources(text, MODS, "avdigits")
    assert message in str(err.value)


def test_condition_names_are_consistent() -> None:
    assert condition_name({"audio": "scratch", "image": "scratch"}) == "scratch"
    assert condition_name({"audio": "run:a", "image": "models:/m@champion"}) == "pretrained"
    assert condition_name({"audio": "scratch", "image": "run:b"}) == "audio_scratch"
