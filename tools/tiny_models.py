"""Tiny randomly initialised models of the served architectures, for tests.

They use the real tokenizers (MiniLM's WordPiece, SmolLM2's BPE with its chat template), so everything
around the weights (tokenisation, label tokens, chat template, padding, export, serving) is exercised
exactly as with the real models, in seconds and a few MB.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tools.core.base_models import minilm_dir

SEED = 1234
TINY_SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
"""The tiny transformers' size: every tiny model of the tests is this small."""

# Tokenizer files of a Hugging Face folder (whichever exist are copied).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "chat_template.jinja",
)


def _copy_tokenizer_files(source: Path, dest: Path) -> None:
    copied = 0
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
            copied += 1
    if not copied:
        raise FileNotFoundError(f"no tokenizer files in {source}")


def build_tiny_encoder(dest: Path, tokenizer_source: Path | None = None) -> Path:
    """Save a random-initialised BERT encoder (hidden 32, 2 layers) with MiniLM's real tokenizer.

    Args:
        dest: Folder to write (created; existing files are overwritten).
        tokenizer_source: Folder to copy tokenizer files from; defaults to all-MiniLM-L6-v2.

    Returns:
        ``dest``, loadable with ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    source = tokenizer_source or minilm_dir()
    dest.mkdir(parents=True, exist_ok=True)
    _copy_tokenizer_files(source, dest)
    tokenizer = AutoTokenizer.from_pretrained(str(dest))
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id or 0, **TINY_SIZE)
    torch.manual_seed(SEED)
    model = BertModel(config).eval()
    model.save_pretrained(str(dest))
    return dest


def build_tiny_lm(dest: Path, tokenizer_source: Path) -> Path:
    """Save a random-initialised Llama causal LM (hidden 32, 2 layers) with a real tokenizer.

    Args:
        dest: Folder to write (created; existing files are overwritten).
        tokenizer_source: A Hugging Face folder whose tokenizer (with chat template) is copied, normally
            the converted SmolLM2 folder from ``tools.core.base_models.smollm2_dir()``.

    Returns:
        ``dest``, loadable with ``AutoModelForCausalLM.from_pretrained``.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    _copy_tokenizer_files(tokenizer_source, dest)
    tokenizer = AutoTokenizer.from_pretrained(str(dest))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(str(dest))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_SIZE,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(dest))
    return dest


def build_tiny_sequence_model(dest: Path, item_ids: list[str]) -> Path:
    """Save a random-initialised SASRec (hidden 16, 1 block, the last 20 items) over ``item_ids``.

    Returns:
        ``dest``, a folder ``instructrec export sequence_encoder`` takes.
    """
    import torch

    from tools.core.sequence_model import SequenceModel, SequentialConfig, save

    config = SequentialConfig(max_len=20, hidden=16, inner=32, layers=1, heads=2, seed=SEED)
    torch.manual_seed(SEED)
    return save(SequenceModel(len(item_ids), config).eval(), item_ids, dest)


def build_tiny_reader(dest: Path, tokenizer_source: Path | None = None) -> Path:
    """Save a random-initialised BERT token classifier with the request reader's labels (hidden 32, 2 layers)
    and MiniLM's real tokenizer: what ``instructrec export request_reader`` takes, in seconds.

    Returns:
        ``dest``, loadable with ``AutoModelForTokenClassification.from_pretrained``.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from services.core.reading import WORD_LABELS

    source = tokenizer_source or minilm_dir()
    dest.mkdir(parents=True, exist_ok=True)
    _copy_tokenizer_files(source, dest)
    tokenizer = AutoTokenizer.from_pretrained(str(dest))
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id or 0, **TINY_SIZE, num_labels=len(WORD_LABELS),
                        id2label=dict(enumerate(WORD_LABELS)), label2id={name: n for n, name in enumerate(WORD_LABELS)})
    torch.manual_seed(SEED)
    BertForTokenClassification(config).eval().save_pretrained(str(dest))
    return dest
