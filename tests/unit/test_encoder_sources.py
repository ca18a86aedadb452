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


def test_contrastive_sources_and_condition_names() -> None:
    assert parse_encoder_sources("contrastive", MODS, "avdigits") == {
        "audio": "models:/avdigits-audio-contrastive-encoder@champion",
        "image": "models:/avdigits-image-contrastive-encoder@champion",
    }
    mixed = parse_encoder_sources("audio=contrastive,image=pretrained", MODS, "avdigits")
    assert mixed["image"] == "models:/avdigits-image-encoder@champion"
    both = {"audio": "run:a", "image": "run:a"}
    assert condition_name(both, contrastive=MODS) == "contrastive"
    assert condition_name(both, contrastive=()) == "pretrained"
    # A mix with contrastive encoders never takes a supervised condition's name.
    assert condition_name(both, contrastive=("audio",)) == "audio_contrastive_image_pretrained"
    half = {"audio": "run:a", "image": "scratch"}
    assert condition_name(half, contrastive=("audio",)) == "audio_contrastive_image_scratch"
    assert condition_name(half) == "image_scratch"
