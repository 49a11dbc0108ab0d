"""The frozen causal LM both LM experiments read (#15): the decoder without its vocabulary projection, the prompt
tokenizer that marks each segment's last token, and the batched pass that reads the states there.

Used by :mod:`tools.lab.intent_ranker` (states at each candidate's last token) and :mod:`tools.lab.lm_sequence`
(states at every history item's last token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class PromptTokenizer:
    """Token ids of a prompt and the positions of each candidate's last token (segments tokenised apart)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def __call__(self, header: str, lines: Sequence[str]) -> tuple[list[int], list[int]]:
        ids = list(self.tokenizer(header, add_special_tokens=False)["input_ids"])
        if self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id, *ids]
        positions = []
        for line in lines:
            ids += self._ids(line)
            positions.append(len(ids) - 1)
        return ids, positions


class FrozenLM:
    """The decoder of the causal LM, without its vocabulary projection: lower layers frozen, top layers trainable."""

    def __init__(self, path: Path, top_layers: int, read_layers: Sequence[int], device: torch.device) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32, attn_implementation="sdpa").to(device)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        n = len(self.model.layers)
        self.split = n - top_layers
        self.read_layers = tuple(r for r in read_layers if 0 < r <= self.split and not (top_layers == 0 and r == n))
        self.top = nn.ModuleList(self.model.layers[self.split:])
        for p in self.top.parameters():
            p.requires_grad_(True)
        for p in self.model.norm.parameters():
            p.requires_grad_(top_layers > 0)
        self.device = device
        self.hidden = self.model.config.hidden_size

    def _run(self, hidden: torch.Tensor, mask: torch.Tensor, layers) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        causal = create_causal_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask, cache=None,
                                    position_ids=position_ids)
        rope = self.model.rotary_emb(hidden, position_ids=position_ids)
        outs = []
        for layer in layers:
            hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, position_ids=position_ids)
            outs.append(hidden)
        return outs

    @torch.no_grad()
    def lower(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Input of the top stack [B, L, H] and the read layers' states [B, L, H] each (final normed when frozen)."""
        hidden = self.model.embed_tokens(ids)
        outs = self._run(hidden, mask, self.model.layers[: self.split])
        base = outs[-1] if outs else hidden
        reads = [outs[r - 1] for r in self.read_layers]
        if self.split == len(self.model.layers):
            reads.append(self.model.norm(base))
        return base, reads

    def upper(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The trainable top layers and the final norm: [B, L, H] -> [B, L, H]."""
        outs = self._run(hidden, mask, self.top)
        return self.model.norm(outs[-1])


def padded_batch(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids [B, L] and their attention mask [B, L] (1 on real tokens)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
    return ids, mask


def read_states(lm: FrozenLM, encoded: Sequence[tuple[Sequence[int], Sequence[int]]], batch: int,
                desc: str | None = None,
                keep_lower: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Half-precision CPU states [len(positions), R, H] of the read layers at each prompt's positions (``encoded``:
    token ids and positions per prompt, as :class:`PromptTokenizer` returns them), and with ``keep_lower`` the top
    stack's input [L, H] per prompt; prompts run in batches of similar length. ``desc``: a progress bar."""
    from tqdm import tqdm

    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    reads: list = [None] * len(encoded)
    lowers: list | None = [None] * len(encoded) if keep_lower else None
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # little padding per batch
    for start in tqdm(range(0, len(order), batch), desc=desc, leave=False, disable=desc is None):
        chunk = order[start: start + batch]
        ids, mask = padded_batch([encoded[i][0] for i in chunk], pad)
        base, layer_reads = lm.lower(ids.to(lm.device), mask.to(lm.device))
        for b, i in enumerate(chunk):
            pos = torch.tensor(encoded[i][1], device=lm.device)
            reads[i] = torch.stack([r[b, pos] for r in layer_reads], dim=1).half().cpu() if layer_reads else \
                torch.zeros(len(pos), 0, lm.hidden, dtype=torch.half)  # [K, R, H]
            if lowers is not None:
                lowers[i] = base[b, : len(encoded[i][0])].half().cpu()  # [L, H]
    return reads, lowers


@dataclass
class ExperimentInputs:
    """What both LM experiments read: the split, the frozen LM, the served encoder and sequence model, and where
    they write (each experiment sets its own ``out_dir``)."""

    data_dir: Path = Path("var/data/movielens-100k")
    base_model: Path = Path("var/base_models/smollm2-135m-instruct")
    encoder: Path = Path("tools/train/adapters/text_encoder")
    """The served text encoder (LoRA adapter folder or HF folder)."""
    sequence: Path = Path("tools/train/adapters/sequence_encoder")
    out_dir: Path = Path("var/lab/run")
    cache_dir: Path | None = None
    """Where examples and frozen LM features are cached (default: ``out_dir/cache``)."""

