"""The request reader in this process: loading a checkpoint (a LoRA adapter with its head, or a merged model),
turning words into its inputs, and its word labels. Training, evaluation and the export read words the same way;
``model_repository/request_reader/1/model.py`` applies the same rule inside Triton (a test checks they agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from services.core.contracts import REQUEST_READER
from services.core.reading import READER_MAX_TOKENS, WORD_LABELS, Reading, Word, decode_spans, read, split_words
from tools.core.adapters import is_lora_adapter, resolve_adapter_base

MAX_TOKENS = READER_MAX_TOKENS


def word_inputs(tokenizer, words: Sequence[Sequence[str]], max_tokens: int = MAX_TOKENS):
    """Tokenised words (padded batch) and, per request, the token index of each word's first sub-word (-1 where
    the word was truncated away)."""
    batch = tokenizer([list(w) for w in words], is_split_into_words=True, truncation=True, max_length=max_tokens,
                      padding=True, return_tensors="pt")
    firsts = []
    for row, request in enumerate(words):
        position = [-1] * len(request)
        for token, word in enumerate(batch.word_ids(row)):
            if word is not None and position[word] < 0:
                position[word] = token
        firsts.append(position)
    return batch, firsts


def predict_labels(model, tokenizer, words: Sequence[Sequence[str]], device: torch.device,
                   max_tokens: int = MAX_TOKENS, batch_size: int = 64) -> list[tuple[list[int], list[float]]]:
    """Each request's word labels and their probabilities (a truncated word: O with probability 1)."""
    out = []
    for start in range(0, len(words), batch_size):
        chunk = words[start:start + batch_size]
        batch, firsts = word_inputs(tokenizer, chunk, max_tokens)
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # [B, T, L]
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        for row, positions in enumerate(firsts):
            labels, confidences = [], []
            for token in positions:
                if token < 0:
                    labels.append(0), confidences.append(1.0)
                else:
                    labels.append(int(np.argmax(probs[row, token])))
                    confidences.append(float(probs[row, token].max()))
            out.append((labels, confidences))
    return out


def load_reader(path: Path, device: torch.device):
    """A reader folder (a LoRA adapter with its head, or a merged model) with its tokenizer."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    if is_lora_adapter(path):
        from peft import PeftModel

        base = resolve_adapter_base(path, REQUEST_READER, None)
        model = AutoModelForTokenClassification.from_pretrained(str(base), num_labels=len(WORD_LABELS))
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        # A published adapter has no tokenizer of its own: the base's is the one it was trained with.
        tokenizer = AutoTokenizer.from_pretrained(str(path if (path / "tokenizer_config.json").is_file() else base))
    else:
        model = AutoModelForTokenClassification.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model.to(device).eval(), tokenizer




class InProcessReader:
    """Reads requests with a reader checkpoint in this process (evaluation; the service asks Triton)."""

    def __init__(self, path: Path, lexicon, titles, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.model, self.tokenizer = load_reader(path, self.device)
        self.lexicon, self.titles = lexicon, titles
        self.version = str(path)

    def read_many(self, texts: Sequence[str]) -> list[Reading]:
        words: list[list[Word]] = [split_words(t) for t in texts]
        labelled = predict_labels(self.model, self.tokenizer, [[w.text for w in ws] for ws in words], self.device)
        return [read(text, ws, decode_spans(ws, labels, confidences), self.lexicon, self.titles, self.version)
                for text, ws, (labels, confidences) in zip(texts, words, labelled)]
