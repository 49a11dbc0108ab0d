"""Triton python-backend adapter of ``request_reader``: a request's text -> each word's role probabilities.

Assets in this version folder (written by ``tools/export``): ``model.onnx`` (a token classifier: inputs
``input_ids``, ``attention_mask``, ``token_type_ids``; output ``label_logits`` [B, T, L]), tokenizer files,
``metadata.json`` and ``triton_adapter.py``.

The words are the ones ``services/core/reading.py`` splits (:data:`WORD_PATTERN` is its ``_WORD`` pattern; a
test keeps the two equal), and a word's probabilities are read at its first sub-word token, as training reads
them (``tools/core/request_reader.py``). Output ``word_label_probs`` [W, L] per request: one row per word, in
order; rows past a request's words (other requests in the batch had more) are zeros, and a word the token budget
cut off is certain to be ``O`` (label 0). Config parameters: ``max_tokens`` (default 64), ``num_threads``.
"""

import re

import numpy as np
from triton_adapter import BatchedModel, run_onnx

WORD_PATTERN = r"\$?\d+(?:[.,]\d+)*(?:'?s)?|[’']\d0s|\w+(?:[-'’][^\W\d]\w*)*|[^\w\s]"
_WORD = re.compile(WORD_PATTERN)


class TritonPythonModel(BatchedModel):
    """Tags the words of all requests in an execution in one ONNX Runtime run."""

    def load(self, args: dict) -> None:
        self.load_onnx_encoder(args, default_max_tokens=64)

    def prepare(self, texts: list) -> list:
        rows = [_WORD.findall(text) for text in texts]
        if not all(rows):
            raise ValueError("text has no words")
        return rows

    def run(self, rows: list) -> np.ndarray:
        encoded = self.tokenizer(rows, is_split_into_words=True, padding=True, truncation=True,
                                 max_length=self.max_tokens, return_tensors="np")
        logits = run_onnx(self.session, encoded).astype(np.float32)  # [B, T, L]
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.zeros((len(rows), max(len(r) for r in rows), probs.shape[-1]), dtype=np.float32)  # [B, W, L]
        for row, words in enumerate(rows):
            out[row, :len(words), 0] = 1.0  # words the token budget cut off: certainly O
            seen = set()
            for token, word in enumerate(encoded.word_ids(row)):
                if word is not None and word not in seen:
                    seen.add(word)
                    out[row, word] = probs[row, token]
        return out
