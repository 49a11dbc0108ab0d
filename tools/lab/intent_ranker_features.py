"""What the intent ranker's heads read (#15): the frozen LM's states at each candidate's last token, computed in
chunks cached on disk, and the MiniLM side (the served text encoder's vectors of the request, the intention and
each candidate)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from services.core import prompts
from tools.lab.frozen_lm import FrozenLM, PromptTokenizer, read_states
from tools.lab.hybrid_retrieval import HybridRetrieval
from tools.lab.intent_ranker_data import IntentRankerConfig, ListExample, prompt_segments


@dataclass
class LMFeatures:
    """Cached per-example LM states: ``reads`` [K, R, H] at the candidates; ``lower`` [L, H] when top layers train."""

    reads: list[torch.Tensor]
    positions: list[list[int]]
    lower: list[torch.Tensor] | None
    tokens: list[int]
    seconds: float


def lm_features(lm: FrozenLM, catalog, examples: Sequence[ListExample], history_items: int, batch: int,
                desc: str = "LM features") -> LMFeatures:
    tok = PromptTokenizer(lm.tokenizer)
    rows = [tok(*prompt_segments(catalog, e.history, e.query, e.candidates, history_items)) for e in examples]
    started = time.monotonic()
    reads, lowers = read_states(lm, rows, batch, desc, keep_lower=lm.split < len(lm.model.layers))
    seconds = time.monotonic() - started
    return LMFeatures(reads, [r[1] for r in rows], lowers, [len(r[0]) for r in rows], seconds)


FEATURE_CHUNK = 100


def _cache_key(config: IntentRankerConfig, *extra: object) -> str:
    keys = ("data_dir", "base_model", "encoder", "sequence", "candidates", "history_items", "specific_share",
            "vague_share", "top_layers", "read_layers", "seed")
    # Retrieval-list caches of earlier runs keep their keys: the list kind joins the key only when it is new.
    extra_keys = {"lists": config.lists} if config.alone else {}
    raw = json.dumps({k: str(getattr(config, k)) for k in keys} | extra_keys | {"extra": [str(x) for x in extra]},
                     sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _merge(parts: Sequence[LMFeatures]) -> LMFeatures:
    lower = None if parts[0].lower is None else [x for p in parts for x in p.lower]
    return LMFeatures([x for p in parts for x in p.reads], [x for p in parts for x in p.positions], lower,
                      [x for p in parts for x in p.tokens], sum(p.seconds for p in parts))


def cached_lm_features(lm: FrozenLM, catalog, examples: Sequence[ListExample], config: IntentRankerConfig,
                       cache_dir: Path, name: str) -> tuple[LMFeatures, float]:
    """Frozen LM features in chunks of ``FEATURE_CHUNK`` lists, each cached under a hash of its prompts; returns
    the features and the seconds spent computing (not loading) them in this run."""
    parts, computed = [], 0.0
    for start in range(0, len(examples), FEATURE_CHUNK):
        chunk = examples[start: start + FEATURE_CHUNK]
        key = _cache_key(config, name, [(e.user, e.target, e.query, e.candidates) for e in chunk])
        path = cache_dir / f"{name}-{start // FEATURE_CHUNK:04d}-{key}.pt"
        if path.is_file():
            parts.append(torch.load(path, weights_only=False))
            continue
        features = lm_features(lm, catalog, chunk, config.history_items, config.feature_batch,
                               f"LM features ({name} {start}-{start + len(chunk)})")
        computed += features.seconds
        tmp = path.with_suffix(".tmp")
        torch.save(features, tmp)
        tmp.replace(path)
        parts.append(features)
    return _merge(parts), computed


@dataclass
class TextFeatures:
    """MiniLM side: the request text and the intention alone per example (candidates read from the item table)."""

    request: torch.Tensor  # [N, D]
    query: torch.Tensor  # [N, D] (zeros without intention)
    items: torch.Tensor  # [catalog, D]
    candidates: torch.Tensor  # [N, K] rows of ``items``


def text_features(retrieval: HybridRetrieval, examples: Sequence[ListExample], history_items: int) -> TextFeatures:
    catalog = retrieval.data.catalog
    request = retrieval.encode([prompts.retrieval_text(e.query, [catalog[i] for i in e.history[-history_items:]],
                                                       history_items) for e in examples])
    with_query = [n for n, e in enumerate(examples) if e.query.strip()]
    query = np.zeros_like(request)
    if with_query:
        query[with_query] = retrieval.encode([examples[n].query for n in with_query])
    candidates = torch.tensor([[retrieval.position[c] for c in e.candidates] for e in examples])
    return TextFeatures(torch.from_numpy(request).float(), torch.from_numpy(query).float(),
                        torch.from_numpy(retrieval.item_vectors).float(), candidates)


def text_blocks(features: TextFeatures, rows: Sequence[int]) -> list[torch.Tensor]:
    """[B, K, D] blocks: the candidate, candidate x request, candidate x intention."""
    items = features.items[features.candidates[list(rows)]]  # [B, K, D]
    request = features.request[list(rows)].unsqueeze(1)  # [B, 1, D]
    query = features.query[list(rows)].unsqueeze(1)
    return [items, items * request, items * query]
