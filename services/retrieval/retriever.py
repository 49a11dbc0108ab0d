"""Candidate retrieval over the item index (no gRPC or Triton here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidArgument
from services.core import prompts
from services.core.catalog import Catalog
from services.core.index import ItemIndex, user_vector
from services.core.validation import Limits, require_known_items

# Embeds one text with the served encoder; returns (vector, model version).
EncodeFn = Callable[[str, float | None], Awaitable[tuple[np.ndarray, str]]]


@dataclass(frozen=True)
class Retrieved:
    """Candidates, best first, and how they were found."""

    candidates: list[tuple[str, float]]
    strategy: str  # "embedding" | "popularity"
    encoder_version: str = ""


class Retriever:
    """Embeds the request (query + recent history titles), blends in the history's item vectors, searches."""

    def __init__(
        self,
        index: ItemIndex,
        catalog: Catalog,
        encode: EncodeFn,
        *,
        history_weight: float,
        recent_history_items: int,
        popularity_weight: float = 0.0,
        default_k: int,
        max_k: int,
        limits: Limits,
    ) -> None:
        self._index = index
        self._catalog = catalog
        self._encode = encode
        self._history_weight = history_weight
        self._popularity_weight = popularity_weight
        self._max_history = recent_history_items
        self._default_k = default_k
        self._max_k = max_k
        self._limits = limits

    def validate(
        self, history_ids: Sequence[str], query: str, exclude_ids: Sequence[str], k: int,
        candidate_ids: Sequence[str] = (),
    ) -> None:
        """Raises InvalidArgument naming the field."""
        if k < 0 or k > self._max_k:
            raise InvalidArgument(f"num_candidates: {k} is outside 0..{self._max_k}")
        self._limits.check_query(query)
        self._limits.check_ids("history_item_ids", history_ids)
        self._limits.check_ids("exclude_item_ids", exclude_ids)
        require_known_items(self._catalog, "history_item_ids", history_ids)
        if candidate_ids:
            self._limits.check_ids("candidate_item_ids", candidate_ids, self._max_k)
            self._limits.check_distinct("candidate_item_ids", candidate_ids)
            require_known_items(self._catalog, "candidate_item_ids", candidate_ids)

    async def _user_vector(self, history_ids: Sequence[str], query: str,
                           timeout_s: float | None) -> tuple[np.ndarray | None, str]:
        """The search vector of a request (None when it has neither text nor history) and the encoder version."""
        recent = [self._catalog[i] for i in history_ids[-self._max_history:]]
        text = prompts.retrieval_text(query, recent, self._max_history)
        if not text:
            return None, ""
        embedding, version = await self._encode(text, timeout_s)
        # Items added to the catalog after the index was built have no vector yet: they only shape the text.
        indexed = [i.item_id for i in recent if i.item_id in self._index]
        history_vectors = self._index.vectors_for(indexed) if indexed else None
        return user_vector(embedding, history_vectors, self._history_weight), version

    async def retrieve(
        self, history_ids: Sequence[str], query: str, exclude_ids: Sequence[str], k: int, timeout_s: float | None,
        candidate_ids: Sequence[str] = (),
    ) -> Retrieved:
        """Top-k items for the request, never one of the history or exclusions; or, with ``candidate_ids``,
        exactly those items scored and ordered.

        Scores are ``cosine + popularity_weight * log(1 + count)`` (``ItemIndex.search``). With neither query
        nor history there is nothing to personalise on: the most popular items are returned, scored by the
        prior term alone.
        """
        self.validate(history_ids, query, exclude_ids, k, candidate_ids)
        vector, version = await self._user_vector(history_ids, query, timeout_s)
        strategy = "popularity" if vector is None else "embedding"
        if candidate_ids:
            scores = self._index.score(vector, candidate_ids, self._popularity_weight)
            order = sorted(range(len(candidate_ids)), key=lambda n: -scores[n])  # stable: ties keep the given order
            return Retrieved([(candidate_ids[n], scores[n]) for n in order], strategy, version)
        k = k or self._default_k
        exclude = set(history_ids) | set(exclude_ids)
        if vector is None:
            ids = [i for i, _ in self._index.popular(k, exclude)]
            return Retrieved(list(zip(ids, self._index.score(None, ids, self._popularity_weight))), strategy)
        return Retrieved(self._index.search(vector, k, exclude, self._popularity_weight), strategy, version)
