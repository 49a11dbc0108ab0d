"""Loading Hugging Face checkpoints for an export: offline mode and the language models' tokenizer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Files that make a folder hold a tokenizer (a LoRA trainer may save one beside the adapter).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


def offline() -> None:
    """Never reach the hub: every checkpoint an export reads is a local folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def has_tokenizer(folder: Path) -> bool:
    """Whether ``folder`` holds tokenizer files."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def chat_tokenizer(model_dir: Path) -> Any:
    """The tokenizer of a causal LM served with its chat template, padding with EOS where it has no pad token.

    Raises:
        ValueError: If the tokenizer has no chat template.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"{model_dir} has no chat template")
    return tokenizer
