"""Parse the ``encoders`` parameter and name the resulting condition."""

from __future__ import annotations

from collections.abc import Sequence

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking import schema
from tsp_mlflow.tracking.resolve import URI_FORMS, is_encoder_uri

SCRATCH = "scratch"
PRETRAINED = "pretrained"
CONTRASTIVE = "contrastive"
KEYWORDS = (SCRATCH, PRETRAINED, CONTRASTIVE)


def parse_encoder_sources(text: str, modalities: Sequence[str], dataset: str) -> dict[str, str]:
    """Map every modality to ``scratch`` or an encoder URI.

    Accepted: ``scratch``; ``pretrained`` (each modality's ``@champion``); ``contrastive``
    (each modality's contrastive ``@champion``); or a comma list
    ``<modality>=<scratch|pretrained|contrastive|URI>``, where unlisted modalities train
    from scratch.
    """
    text = (text or "").strip()
    usage = (
        f"-P encoders=scratch | pretrained | contrastive | e.g. {modalities[0]}=scratch,"
        f"{modalities[-1]}=models:/{schema.registered_encoder_name(dataset, modalities[-1])}@champion "
        f"(sources: scratch, pretrained, contrastive, {URI_FORMS})"
    )
    if text in KEYWORDS:
        return {m: _source(text, m, dataset) for m in modalities}
    sources = dict.fromkeys(modalities, SCRATCH)
    seen: set[str] = set()
    for item in text.split(","):
        modality, sep, source = (part.strip() for part in item.partition("="))
        if not sep or not modality or not source:
            raise UserInputError(
                f"malformed encoders={text!r}: item {item!r} is not <modality>=<source>; {usage}"
            )
        if modality not in modalities:
            raise UserInputError(
                f"encoders={text!r} names unknown modality {modality!r}; dataset {dataset!r} has "
                f"{', '.join(modalities)}"
            )
        if modality in seen:
            raise UserInputError(f"encoders={text!r} gives modality {modality!r} twice")
        if source not in KEYWORDS and not is_encoder_uri(source):
            raise UserInputError(f"encoders={text!r}: {source!r} is not a valid source; {usage}")
        seen.add(modality)
        sources[modality] = _source(source, modality, dataset)
    return sources


def condition_name(sources: dict[str, str], contrastive: Sequence[str] = ()) -> str:
    """``scratch``, ``pretrained``, ``contrastive`` (every encoder from contrastive
    pretraining, listed in ``contrastive``), ``<m>[_<m>...]_scratch`` for a mix of scratch
    and supervised encoders, or ``audio_contrastive_image_scratch`` for any other mix."""
    scratch = [m for m, s in sources.items() if s == SCRATCH]
    if len(scratch) == len(sources):
        return schema.CONDITION_SCRATCH
    if set(contrastive) == set(sources):
        return schema.CONDITION_CONTRASTIVE
    if contrastive:  # a mix with contrastive encoders: name every modality's source
        kinds = {
            m: "scratch" if m in scratch else "contrastive" if m in contrastive else "pretrained"
            for m in sources
        }
        return "_".join(f"{m}_{kind}" for m, kind in kinds.items())
    if not scratch:
        return schema.CONDITION_PRETRAINED
    return "_".join(scratch) + "_scratch"


def _source(source: str, modality: str, dataset: str) -> str:
    if source in (PRETRAINED, CONTRASTIVE):
        objective = schema.OBJECTIVE_SUPERVISED if source == PRETRAINED else source
        name = schema.registered_encoder_name(dataset, modality, objective)
        return f"models:/{name}@{schema.CHAMPION_ALIAS}"
    return source
