"""The tracking schema round-trips and stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tsp_mlflow.tracking import schema


def test_metric_keys_round_trip() -> None:
    key = schema.metric_key("val", "audio-image", "f1_macro")
    assert key == "val/audio-image/f1_macro"
    assert schema.parse_metric_key(key) == ("val", "audio-image", "f1_macro")
    assert schema.parse_metric_key(schema.TRAIN_LOSS) is None
    assert schema.parse_metric_key("time/epoch_s") is None


def test_tag_names_are_namespaced() -> None:
    assert schema.encoder_source_tag("audio") == "tsp.encoder.audio.source"
    assert schema.encoder_run_tag("image") == "tsp.encoder.image.run_id"
    assert schema.registered_encoder_name("avdigits", "audio") == "avdigits-audio-encoder"


@pytest.mark.slow
def test_analysis_and_schema_import_without_torch() -> None:
    # Every module of analysis/ (the stats and the report included) and the CLI it shares.
    code = (
        "import importlib, pkgutil, sys, analysis, tsp_mlflow.cli, tsp_mlflow.tracking.schema;"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(analysis.__path__, 'analysis.')"
        " if m.name != 'analysis.__main__'];"
        "print(len(sys.modules) > 0 and 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
