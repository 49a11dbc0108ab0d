"""Hybrid candidate retrieval: the sequence model and the text encoder, fused (no gRPC or Triton here).

Candidates come from two sources: the sequence model's index (the user's item history -> a user vector ->
inner product with its item vectors) and the text encoder's index (the request text: query + recent
titles, blended with the history's item vectors). The union is scored by one rule
(:func:`services.core.fusion.fuse_retrieval`) with weights per situation (with a query / without), and the
top K are returned with their fused score. A source whose weight is 0 in a situation is not called: a
request without a query pays for no text-encoder call when the fitted text weight without a query is 0.

Users without history: the text (their query) and popularity; neither: the most popular items. Items added
to the catalog after the sequence model was trained have no sequence vector and are reached through text.

Attribute filters (``services/core/filters.py``) are applied inside the search, so a narrow filter still
yields K candidates when K items match: the catalog's precomputed attribute postings give the set of
allowed items; when it is small (``exact_filter_max_items``) every allowed item is scored by the fused rule
(exact, and cheap: a few thousand inner products); otherwise each source over-fetches in proportion to
how selective the filters are and keeps the allowed items, falling back to exact scoring if that still
leaves fewer than K. The popularity fallback is filtered the same way.

A query is also read for what it asks of the items' attributes (``services/core/intent.py``): the text
encoder embeds the query alone (concurrently with the request text), the snapshot's intent model names the
values it asks for ("something that will make me laugh" -> genres=Comedy), and every item's fused score gains
the situation's fitted ``intent`` weight x log(p(its value | query) x V) per attribute named (``intent_weight``
overrides the fitted weights; 0 turns intention understanding off). The whole catalog is then scored exactly
(up to ``exact_filter_max_items``), so items the two indexes would not have fetched for the query's wording
are found; a soft preference, not a filter.

A request reads one :class:`Snapshot`, the pair of indexes, each with the model version that built it,
and asks Triton for exactly those versions, so a user vector is never searched against an index built by
another version; :meth:`Retriever.install` switches every later request to a new pair at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from services.common.errors import InvalidArgument, Unavailable
from services.core import prompts
from services.core.catalog import Catalog
from services.core.contracts import RETRIEVAL_TEMPERATURE
from services.core.deadlines import Budget
from services.core.filters import AttributeFilter, CatalogAttributes, FilterLimits
from services.core.fusion import RetrievalFusion, SourceWeights, fuse_retrieval
from services.core.index import IndexFormatError, ItemIndex, user_vector
from services.core.intent import IntentModel, Understood
from services.core.validation import Limits, require_known_items

log = logging.getLogger(__name__)

# Embeds one text with the served encoder at a pinned version: (text, timeout_s, version) -> (vector, version).
EncodeTextFn = Callable[[str, float, str], Awaitable[tuple[np.ndarray, str]]]
# Encodes an item history (oldest first) with the sequence model at a pinned version -> (vector, version).
EncodeHistoryFn = Callable[[Sequence[str], float, str], Awaitable[tuple[np.ndarray, str]]]

HYBRID, SEQUENCE, TEXT, POPULARITY = "hybrid", "sequence", "text", "popularity"
# The intention's understood-attribute score of each item, before its weight: item ids -> scores (aligned).
IntentScores = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Retrieved:
    """Candidates, best first, how they were found, and the model versions that found them."""

    candidates: list[tuple[str, float]]
    strategy: str  # "hybrid" | "sequence" | "text" | "popularity"
    model_versions: list[tuple[str, str]] = field(default_factory=list)
    understood: list[Understood] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    """The indexes one request searches: the text encoder's, and the sequence model's if it is served; the
    intent model trained against the text index's encoder version, if the index has one."""

    text: ItemIndex
    sequence: ItemIndex | None = None
    intent: IntentModel | None = None


class Retriever:
    """Scores and searches the union of the sequence and text candidates under one fused rule."""

    def __init__(
        self,
        snapshot: Snapshot,
        catalog: Catalog,
        *,
        encode_text: EncodeTextFn,
        encode_history: EncodeHistoryFn | None,
        fusion: RetrievalFusion,
        history_weight: float,
        recent_history_items: int,
        sequence_history_items: int,
        source_candidates: int,
        text_timeout_s: float,
        sequence_timeout_s: float,
        default_k: int,
        max_k: int,
        limits: Limits,
        temperature: float = RETRIEVAL_TEMPERATURE,
        filter_limits: FilterLimits = FilterLimits(),
        exact_filter_max_items: int = 5_000,
        filter_overfetch: float = 1.5,
        intent_weight: float | None = None,
        intent_min_confidence: float = 0.5,
    ) -> None:
        self._snapshot = snapshot
        self._catalog = catalog
        self._encode_text = encode_text
        self._encode_history = encode_history
        self._fusion = fusion
        self._history_weight = history_weight
        self._max_history = recent_history_items
        self._sequence_history = sequence_history_items
        self._source_candidates = source_candidates
        self._text_timeout_s = text_timeout_s
        self._sequence_timeout_s = sequence_timeout_s
        self._default_k = default_k
        self._max_k = max_k
        self._limits = limits
        self._temperature = temperature
        self._attributes = CatalogAttributes(catalog)
        self._filter_limits = filter_limits
        self._exact_max = exact_filter_max_items
        self._overfetch = filter_overfetch
        self._intent_weight = intent_weight
        self._intent_min_confidence = intent_min_confidence

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def catalog_grew(self) -> None:
        """Items were added to the catalog in place: filters see them now; they are scored by text once the index
        that holds their vectors is installed (they have no sequence vector)."""
        self._attributes.refresh()

    def install(self, snapshot: Snapshot) -> None:
        """Serve every later request from ``snapshot`` (requests in flight finish on the pair they started)."""
        self._snapshot = snapshot

    def validate(
        self, history_ids: Sequence[str], query: str, exclude_ids: Sequence[str], k: int,
        candidate_ids: Sequence[str] = (), filters: Sequence[AttributeFilter] = (),
    ) -> None:
        """Raises InvalidArgument naming the field."""
        self._attributes.validate_filters(filters, self._filter_limits)
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

    def _weights(self, *, has_sequence: bool, has_query: bool) -> SourceWeights:
        """The fitted weights of the situation (``without_sequence`` when the sequence side cannot run: no
        sequence index, no history it knows, or the model failed), with the intent weight override if set."""
        w = self._fusion.weights(has_query=has_query, has_sequence=has_sequence)
        return w if self._intent_weight is None else replace(w, intent=self._intent_weight)

    async def _text_vector(self, snap: Snapshot, history_ids: Sequence[str], query: str,
                           budget: Budget) -> tuple[np.ndarray | None, tuple[str, str]]:
        recent = [self._catalog[i] for i in history_ids[-self._max_history:]]
        text = prompts.retrieval_text(query, recent, self._max_history)
        if not text:
            return None, ("", "")
        index = snap.text
        embedding, version = await self._encode_text(text, budget.hop(index.model_name, self._text_timeout_s),
                                                      index.model_version)
        _check(index, embedding, version)
        indexed = [i.item_id for i in recent if i.item_id in index]
        history_vectors = index.vectors_for(indexed) if indexed else None
        return user_vector(embedding, history_vectors, self._history_weight), (index.model_name, version)

    async def _understand(self, snap: Snapshot, w: SourceWeights, query: str, budget: Budget) -> list[Understood]:
        """What the query alone asks of the items' attributes (nothing when intention understanding is off)."""
        if snap.intent is None or w.intent <= 0 or not query.strip():
            return []
        index = snap.text
        embedding, version = await self._encode_text(query.strip(),
                                                     budget.hop(index.model_name, self._text_timeout_s),
                                                     index.model_version)
        _check(index, embedding, version)
        return snap.intent.understand(np.asarray(embedding).reshape(-1), self._intent_min_confidence)

    async def _sequence_vector(self, snap: Snapshot, history_ids: Sequence[str],
                               budget: Budget) -> tuple[np.ndarray, tuple[str, str]]:
        index = snap.sequence
        recent = history_ids[-self._sequence_history:]
        vector, version = await self._encode_history(
            recent, budget.hop(index.model_name, self._sequence_timeout_s), index.model_version)
        _check(index, vector, version)
        return np.asarray(vector, dtype=np.float32).reshape(-1), (index.model_name, version)

    async def retrieve(
        self, history_ids: Sequence[str], query: str, exclude_ids: Sequence[str], k: int, timeout_s: float | None,
        candidate_ids: Sequence[str] = (), filters: Sequence[AttributeFilter] = (),
    ) -> Retrieved:
        """Top-k items for the request that every filter allows, never one of the history or exclusions; or,
        with ``candidate_ids``, those of them the filters allow, scored by the same rule and ordered (ties keep
        the given order)."""
        self.validate(history_ids, query, exclude_ids, k, candidate_ids, filters)
        allowed = self._attributes.eligible(filters)
        snap = self._snapshot
        budget = Budget(timeout_s)
        has_query = bool(query.strip())
        # The sequence model reads the history items it has vectors for (new catalog items have none).
        seq_history = [i for i in history_ids if i in snap.sequence] if snap.sequence is not None else []
        w = self._weights(has_sequence=bool(seq_history) and self._encode_history is not None, has_query=has_query)
        versions: list[tuple[str, str]] = []
        seq_vector = text_vector = None
        if w.sequence > 0:
            try:
                seq_vector, version = await self._sequence_vector(snap, seq_history, budget)
                versions.append(version)
            except Unavailable as exc:
                # The text side can still answer; the strategy tells the caller which sources ran.
                log.warning("sequence model unavailable; retrieving by text", extra={"error": str(exc)})
                w = self._weights(has_sequence=False, has_query=has_query)
        async def text_side() -> tuple[np.ndarray | None, tuple[str, str]]:
            return await self._text_vector(snap, history_ids, query, budget) if w.text > 0 else (None, ("", ""))

        # One query, two texts: the request text (query + history) and the query alone; Triton batches them.
        (text_vector, version), understood = await asyncio.gather(text_side(), self._understand(snap, w, query, budget))
        if text_vector is not None:
            versions.append(version)
        intent = (lambda ids: snap.intent.item_scores(understood, self._catalog, ids)) if understood else None
        strategy = _strategy(seq_vector is not None, text_vector is not None)
        if candidate_ids:
            if allowed is not None:
                candidate_ids = [i for i in candidate_ids if i in allowed]
            if not candidate_ids:
                return Retrieved([], strategy, versions, understood)
            scores = self._score(snap, w, list(candidate_ids), seq_vector, text_vector, intent)
            order = sorted(range(len(candidate_ids)), key=lambda n: -scores[n])
            return Retrieved([(candidate_ids[n], float(scores[n])) for n in order], strategy, versions, understood)
        k = k or self._default_k
        exclude = set(history_ids) | set(exclude_ids)
        if intent is not None and allowed is None:
            allowed = self._attributes.all_items
        if allowed is not None:
            found = self._filtered(snap, w, allowed, exclude, k, seq_vector, text_vector, intent)
            return Retrieved(found, strategy, versions, understood)
        if strategy == POPULARITY:
            ids = [i for i, _ in snap.text.popular(k, exclude)]
            return Retrieved(list(zip(ids, self._score(snap, w, ids, None, None).tolist())), strategy, versions)
        pool: dict[str, None] = {}
        fetch = max(k, self._source_candidates)
        if seq_vector is not None:
            pool.update(dict.fromkeys(i for i, _ in snap.sequence.search(seq_vector, fetch, exclude)))
        if text_vector is not None:
            prior = w.popularity * self._temperature / max(w.text, 1e-12)
            pool.update(dict.fromkeys(i for i, _ in snap.text.search(text_vector, fetch, exclude, prior)))
        ids = list(pool)
        scores = self._score(snap, w, ids, seq_vector, text_vector)
        order = np.argsort(-scores, kind="stable")[:k]
        return Retrieved([(ids[n], float(scores[n])) for n in order], strategy, versions)

    def _filtered(self, snap: Snapshot, w: SourceWeights, allowed: Collection[str], exclude: Collection[str], k: int,
                  seq_vector: np.ndarray | None, text_vector: np.ndarray | None,
                  intent: IntentScores | None = None) -> list[tuple[str, float]]:
        """The top k of the items in ``allowed`` (and not in ``exclude``) that a running source can reach."""
        def reachable(item_id: str) -> bool:
            # What the unfiltered search could find: the text index's items; the sequence index's when its
            # source runs (new catalog items have no sequence vector).
            return item_id not in exclude and (
                item_id in snap.text or (seq_vector is not None and item_id in snap.sequence))

        if len(allowed) <= self._exact_max:
            return self._top(snap, w, [i for i in allowed if reachable(i)], k, seq_vector, text_vector, intent)
        # Over-fetch in proportion to the share of the catalog the filters allow; a search returns at most
        # ``fetch`` items of which about ``fetch * share`` pass.
        share = max(len(allowed) / max(len(self._catalog), 1), 1e-9)
        fetch = max(k, self._source_candidates)
        wide = math.ceil(fetch * self._overfetch / share) + len(exclude)
        pool: dict[str, None] = {}
        if seq_vector is None and text_vector is None:
            pool.update(dict.fromkeys(i for i, _ in snap.text.popular(min(wide, len(snap.text)), exclude)))
        if seq_vector is not None:
            pool.update(dict.fromkeys(i for i, _ in snap.sequence.search(seq_vector, min(wide, len(snap.sequence)),
                                                                          exclude)))
        if text_vector is not None:
            prior = w.popularity * self._temperature / max(w.text, 1e-12)
            pool.update(dict.fromkeys(i for i, _ in snap.text.search(text_vector, min(wide, len(snap.text)), exclude,
                                                                      prior)))
        ids = [i for i in pool if i in allowed]
        if len(ids) < k:
            # Unlucky draw (the allowed items rank low for this user): score them all, so that K still come back.
            ids = [i for i in allowed if reachable(i)]
        return self._top(snap, w, ids, k, seq_vector, text_vector, intent)

    def _top(self, snap: Snapshot, w: SourceWeights, ids: list[str], k: int, seq_vector: np.ndarray | None,
             text_vector: np.ndarray | None, intent: IntentScores | None = None) -> list[tuple[str, float]]:
        """The k best of ``ids`` by the fused score; ties in catalog order."""
        if not ids:
            return []
        ids = sorted(ids, key=self._attributes.order)
        scores = self._score(snap, w, ids, seq_vector, text_vector, intent)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(ids[n], float(scores[n])) for n in order]

    def _score(self, snap: Snapshot, w: SourceWeights, ids: list[str], seq_vector: np.ndarray | None,
               text_vector: np.ndarray | None, intent: IntentScores | None = None) -> np.ndarray:
        """The fused score of each of ``ids`` (aligned), plus the intention's item scores when it named any."""
        sequence = text = None
        if seq_vector is not None:
            sequence = _scores_or_nan(snap.sequence, seq_vector, ids)
        if text_vector is not None:
            text = _scores_or_nan(snap.text, text_vector, ids)
        return fuse_retrieval(w, sequence=sequence, text=text, log_popularity=snap.text.log_popularity(ids),
                              temperature=self._temperature, intent=intent(ids) if intent is not None else None)


def _strategy(sequence: bool, text: bool) -> str:
    if sequence and text:
        return HYBRID
    return SEQUENCE if sequence else TEXT if text else POPULARITY


def _scores_or_nan(index: ItemIndex, vector: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    """Inner products with the indexed items; NaN for items the index does not hold."""
    known = [i for i in ids if i in index]
    values = dict(zip(known, (index.vectors_for(known) @ vector.astype(np.float32)).tolist())) if known else {}
    return np.array([values.get(i, np.nan) for i in ids], dtype=np.float64)


def _check(index: ItemIndex, vector: np.ndarray, version: str) -> None:
    """Refuse a vector from another model version (or shape) than the index's: it would search another space."""
    try:
        index.check_compatible(dim=int(np.asarray(vector).reshape(-1).shape[0]), model_version=version or None)
    except IndexFormatError as exc:
        log.error("refused a vector that does not match its index", extra={"error": str(exc)})
        raise Unavailable(f"retrieval: {exc}") from exc
