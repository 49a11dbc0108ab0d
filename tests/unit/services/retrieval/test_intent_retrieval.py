"""Retrieval reads the query for attribute values: they raise the items that have them, as soft preferences."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.core.catalog import Catalog, Item
from services.core.filters import AttributeFilter
from services.core.fusion import RetrievalFusion, SourceWeights
from services.core.intent import NONE, AttributeHead, IntentModel
from services.retrieval.retriever import Retriever, Snapshot
from tests.unit.services.retrieval.helpers import make_retriever, retrieval_fusion, snapshot_of

N, DIM = 400, 8
GENRES = ("Comedy", "Drama", "Horror", "Western")
CATALOG = Catalog({str(i): Item(str(i), f"Item {i}", 1950 + i % 50, (GENRES[i % 4],)) for i in range(N)})
RNG = np.random.default_rng(5)
USER = RNG.normal(size=DIM).astype(np.float32)
SEQ = RNG.normal(size=(N, DIM)).astype(np.float32)
SEQ[[i for i in range(N) if i % 4 == 0]] -= USER * 0.3  # the user's taste leans away from comedies
QUERY_VECTOR = np.eye(DIM, dtype=np.float32)[0]  # what the encoder returns for the query alone
HEAD = AttributeHead("genres", (*GENRES, NONE), np.vstack([np.eye(DIM)[0] * 12, np.zeros((4, DIM))]), np.zeros(5))
FUSION = retrieval_fusion(text=0.5, popularity=0.1)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    base: Path = tmp_path_factory.mktemp("intent")
    return snapshot_of(base, list(CATALOG.items), SEQ, RNG.normal(size=(N, DIM)),
                       intent=IntentModel([HEAD], encoder_version="1"))


class Encoder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, text: str, timeout_s: float, version: str):
        self.texts.append(text)
        return (QUERY_VECTOR if text == "make me laugh" else np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)), "1"


async def _history(ids, timeout_s, version):
    return USER, "1"


def _retriever(snapshot: Snapshot, encoder: Encoder, weight: float | None,
               fusion: RetrievalFusion = FUSION) -> Retriever:
    return make_retriever(snapshot, CATALOG, encode_text=encoder, encode_history=_history, fusion=fusion,
                          max_k=400, intent_weight=weight)


def _comedies(found) -> int:
    return sum(CATALOG[i].genres == ("Comedy",) for i, _ in found)


def test_the_query_s_genre_raises_its_items_and_is_reported(snapshot: Snapshot) -> None:
    encoder = Encoder()
    off = asyncio.run(_retriever(snapshot, Encoder(), 0.0).retrieve(["1", "2"], "make me laugh", [], 20, None))
    on = asyncio.run(_retriever(snapshot, encoder, 2.0).retrieve(["1", "2"], "make me laugh", [], 20, None))
    assert off.understood == [] and [u.value for u in on.understood] == ["Comedy"]
    assert _comedies(on.candidates) == 20 > _comedies(off.candidates)
    assert "make me laugh" in encoder.texts and len(encoder.texts) == 2  # the query alone, and query + history
    scores = [s for _, s in on.candidates]
    assert scores == sorted(scores, reverse=True)


def test_it_is_a_preference_not_a_filter_and_filters_still_hold(snapshot: Snapshot) -> None:
    weak = asyncio.run(_retriever(snapshot, Encoder(), 0.01).retrieve(["1"], "make me laugh", [], 40, None))
    assert 0 < _comedies(weak.candidates) < 40  # a small weight only nudges
    drama = [AttributeFilter.any_of("genres", ["Drama"])]
    found = asyncio.run(_retriever(snapshot, Encoder(), 2.0).retrieve(["1"], "make me laugh", [], 20, None,
                                                                        filters=drama))
    assert len(found.candidates) == 20 and all(CATALOG[i].genres == ("Drama",) for i, _ in found.candidates)


def test_without_a_query_or_with_the_weight_off_nothing_changes(snapshot: Snapshot) -> None:
    encoder = Encoder()
    plain = asyncio.run(_retriever(snapshot, encoder, 2.0).retrieve(["1", "2"], "", [], 20, None))
    assert plain.understood == [] and encoder.texts == []  # no query: no text call at all (text weight 0)
    snapshot_without = Snapshot(snapshot.text, snapshot.sequence)
    same = asyncio.run(_retriever(snapshot_without, Encoder(), 2.0).retrieve(["1", "2"], "", [], 20, None))
    assert same.candidates == plain.candidates
    encoder = Encoder()
    asyncio.run(_retriever(snapshot, encoder, 0.0).retrieve(["1"], "make me laugh", [], 20, None))
    assert encoder.texts == ["make me laugh. Recently watched: Item 1 (1951)"]  # weight off: no second call


def test_each_situation_uses_its_fitted_intent_weight_unless_overridden(snapshot: Snapshot) -> None:
    fitted = RetrievalFusion(with_query=SourceWeights(sequence=1.0, text=0.5, popularity=0.1, intent=0.0),
                             without_query=FUSION.without_query,
                             without_sequence=SourceWeights(sequence=0.0, text=1.0, popularity=1.0, intent=4.0))
    # With a history the with_query situation's intent weight is 0: the query is not read for attributes.
    encoder = Encoder()
    known = asyncio.run(_retriever(snapshot, encoder, None, fitted).retrieve(["1"], "make me laugh", [], 20, None))
    assert known.understood == [] and "make me laugh" not in encoder.texts
    # An anonymous caller: the without_sequence situation, whose fitted weight 4 reads it.
    anonymous = asyncio.run(_retriever(snapshot, Encoder(), None, fitted).retrieve([], "make me laugh", [], 20, None))
    assert [u.value for u in anonymous.understood] == ["Comedy"] and _comedies(anonymous.candidates) == 20
    # The override replaces every situation's weight: 0 is the heads-off ablation for anonymous callers too.
    off = asyncio.run(_retriever(snapshot, Encoder(), 0.0, fitted).retrieve([], "make me laugh", [], 20, None))
    assert off.understood == [] and _comedies(off.candidates) < 20
    on = asyncio.run(_retriever(snapshot, Encoder(), 2.0, fitted).retrieve(["1"], "make me laugh", [], 20, None))
    assert [u.value for u in on.understood] == ["Comedy"]
