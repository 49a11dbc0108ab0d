"""The text encoder in this process: loading a checkpoint (or a LoRA adapter merged into its base) and encoding
texts through the served pooling (:func:`services.core.modeltext.mean_pooled_encoder`). Training, the fits,
evaluation and the index build encode the same way as ``text_encoder`` on Triton.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.core.catalog import Item, item_text
from services.core.contracts import TEXT_ENCODER
from services.core.modeltext import mean_pooled_encoder
from tools.core.adapters import is_lora_adapter, resolve_adapter_base

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_TOKENS = 256
"""Tokens of one text the encoder reads (the export's ``max_tokens`` default). torch is imported where it is
used, so reading this constant (the export's settings do) costs nothing."""


def load_encoder(path: Path, device: torch.device):
    """A Hugging Face encoder folder, or a LoRA adapter merged into its base; with its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    if is_lora_adapter(path):
        from peft import PeftModel

        base = resolve_adapter_base(path, TEXT_ENCODER, None)
        model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(base)), str(path)).merge_and_unload()
        tokenizer = AutoTokenizer.from_pretrained(str(base))
    else:
        model = AutoModel.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model.to(device).eval(), tokenizer


def encode(pooled, tokenizer, texts: Sequence[str], device: torch.device, max_tokens: int = DEFAULT_MAX_TOKENS,
           batch_size: int = 128) -> torch.Tensor:
    """[N, D] unit vectors (gradients flow when called outside ``no_grad``)."""
    import torch

    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start: start + batch_size]), padding=True, truncation=True,
                          max_length=max_tokens, return_tensors="pt")
        token_types = batch.get("token_type_ids", torch.zeros_like(batch["input_ids"]))
        out.append(pooled(batch["input_ids"].to(device), batch["attention_mask"].to(device), token_types.to(device)))
    return torch.cat(out)


def item_vectors(encoder: Path, items: Sequence[Item], device: torch.device) -> np.ndarray:
    """Item vectors as the index holds them, computed in this process."""
    import torch

    model, tokenizer = load_encoder(encoder, device)
    with torch.no_grad():
        return encode(mean_pooled_encoder(model), tokenizer, [item_text(i) for i in items], device).cpu().numpy()
