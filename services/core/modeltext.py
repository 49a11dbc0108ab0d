"""The text each model reads and the torch modules the exports wrap: shared by training, export and bench.

An instruction the ranker was trained on must reach the same tokens in serving: the ranker's model text
(chat template + answer prefix), its label tokens, the scorer module (label logits at the last token) and
the mean-pooled encoder are defined here once. The python-backend adapters in ``model_repository`` apply
the same rules inside Triton (they cannot import this package; ``tests/integration`` checks they agree).
torch is imported inside the functions so that serving code can import this module without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from services.core import prompts
from services.core.contracts import RANKER_ANSWER_PREFIX


def ranker_model_text(tokenizer: Any, prompt: str, answer_prefix: str = RANKER_ANSWER_PREFIX) -> str:
    """The text the ranker scores: the chat template's user turn, the opened assistant turn, the prefix.

    It is tokenised with ``add_special_tokens=False`` (the template already holds the special tokens).
    ``model_repository/ranker/1/model.py`` applies the same rule.
    """
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return chat + answer_prefix


def label_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of the ranker's labels (``prompts.label_token_text``), which must be single tokens.

    Raises:
        ValueError: If a label is not exactly one token in this tokenizer.
    """
    ids = []
    for label in prompts.LABELS:
        text = prompts.label_token_text(label)
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"label {text!r} is {len(tokens)} tokens {tokens} in this tokenizer; need exactly 1")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"label tokens are not distinct: {ids}")
    return ids


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token rows into ``input_ids`` and ``attention_mask`` (int64), the layout every export reads."""
    length = max(len(r) for r in rows)
    input_ids = np.full((len(rows), length), pad_id, dtype=np.int64)  # [B, L]
    attention_mask = np.zeros((len(rows), length), dtype=np.int64)  # [B, L]
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def mean_pooled_encoder(encoder: Any) -> Any:
    """The served text encoder as a torch module (what the export traces and the retriever trains)."""
    import torch

    class MeanPooledEncoder(torch.nn.Module):
        """Encoder -> mean over unmasked tokens -> L2 normalisation (sentence-transformers style)."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state  # [B, L, D]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # [B, D]
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)  # [B, D]

    return MeanPooledEncoder(encoder).eval()


def ranker_scorer(lm: Any, label_ids: list[int]) -> Any:
    """The served ranker as a torch module: label logits at each row's last token (exported and trained)."""
    import torch

    class LabelScorer(torch.nn.Module):
        """Causal LM -> hidden state at each row's last real token -> logits of the label tokens only.

        The backbone's ``last_hidden_state`` already has the final norm applied; only the label rows of the
        LM head are kept, so the ONNX graph never computes the full-vocabulary logits.
        """

        def __init__(self, lm: Any, label_ids: list[int]) -> None:
            super().__init__()
            self.backbone = lm.get_decoder() if hasattr(lm, "get_decoder") else getattr(lm, lm.base_model_prefix)
            head = lm.get_output_embeddings()
            index = torch.tensor(label_ids, dtype=torch.long)
            self.register_buffer("label_weight", head.weight.detach()[index].clone())  # [C, H]
            bias = getattr(head, "bias", None)
            label_bias = bias.detach()[index].clone() if bias is not None else torch.zeros(len(label_ids))
            self.register_buffer("label_bias", label_bias)  # [C]

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state  # [B, L, H]
            last = attention_mask.sum(dim=1) - 1  # [B], right padding
            index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])  # [B, 1, H]
            picked = hidden.gather(1, index).squeeze(1)  # [B, H]
            return picked @ self.label_weight.t() + self.label_bias  # [B, C]

    return LabelScorer(lm, label_ids).eval()
