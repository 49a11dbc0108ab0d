"""The offline form of the served retrieval score equals what the retrieval service computes for the same inputs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.core.catalog import Catalog, Item
from services.core.fusion import RetrievalFusion, SourceWeights
from services.core.index import ItemIndex, write_item_index
from services.core.intent import NONE, AttributeHead, IntentModel
from services.core.validation import Limits
from services.retrieval.retriever import Retriever, Snapshot
from tools.core.retrieval_score import CatalogScorer

N, DIM, HISTORY_WEIGHT = 60, 8, 0.3
GENRES = ("Comedy", "Drama", "Horror")
CATALOG = Catalog({str(i): Item(str(i), f"Item {i}", 1950 + i, (GENRES[i % 3],)) for i in range(N)})
IDS = list(CATALOG.items)
RNG = np.random.default_rng(11)
TEXT = RNG.normal(size=(N, DIM)).astype(np.float32)
TEXT /= np.linalg.norm(TEXT, axis=1, keepdims=True)
SEQUENCE = RNG.normal(size=(N - 5, DIM)).astype(np.float32)  # the last 5 items are new to the sequence model
POPULARITY = RNG.integers(0, 50, size=N)
USER = RNG.normal(size=DIM).astype(np.float32)
REQUEST = RNG.normal(size=DIM).astype(np.float32)
HEAD = AttributeHead("genres", (*GENRES, NONE), RNG.normal(size=(4, DIM)) * 3, np.zeros(4))
FUSION = RetrievalFusion(with_query=SourceWeights(sequence=1.0, text=0.5, popularity=1.0, intent=2.0),
                         without_query=SourceWeights(sequence=1.0, text=0.2, popularity=0.5),
                         without_sequence=SourceWeights(sequence=0.0, text=0.1, popularity=0.5, intent=4.0))


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    base: Path = tmp_path_factory.mktemp("scores")
    (base / "seq").mkdir()
    (base / "text").mkdir()
    write_item_index(base / "seq", IDS[:N - 5], SEQUENCE, model_version="1", model_name="sequence_encoder",
                     metric="dot")
    write_item_index(base / "text", IDS, TEXT, model_version="1", model_name="text_encoder", metric="cosine",
                     popularity=POPULARITY.tolist())
    intent = IntentModel([HEAD], encoder_version="1")
    return Snapshot(ItemIndex.load(base / "text"), ItemIndex.load(base / "seq"), intent)


async def _encode_text(text: str, timeout_s: float, version: str):
    return REQUEST, "1"


async def _encode_history(ids, timeout_s: float, version: str):
    return USER, "1"


@pytest.mark.parametrize(("history", "query", "situation"), [
    (["1", "2", "3"], "something funny", "with_query"),
    (["4", "7"], "", "without_query"),
    ([], "something funny", "without_sequence"),
])
def test_offline_fused_score_equals_the_services(snapshot: Snapshot, history: list[str], query: str,
                                                 situation: str) -> None:
    retriever = Retriever(snapshot, CATALOG, encode_text=_encode_text, encode_history=_encode_history,
                          fusion=FUSION, history_weight=HISTORY_WEIGHT, recent_history_items=10,
                          sequence_history_items=50, source_candidates=20, text_timeout_s=5.0, sequence_timeout_s=5.0,
                          default_k=20, max_k=N, limits=Limits(), intent_min_confidence=0.0)
    # Every catalog item as a candidate: the service then fills an unknown item's sequence score with the mean over
    # the catalog, as the offline form does over its columns.
    served = asyncio.run(retriever.retrieve(history, query, [], N, None, candidate_ids=IDS))
    served_scores = dict(served.candidates)

    scorer = CatalogScorer(IDS, dict(zip(IDS, POPULARITY.tolist())), TEXT, dict(zip(IDS[:N - 5], SEQUENCE)),
                           history_weight=HISTORY_WEIGHT)
    weights = getattr(FUSION, situation)
    sequence = scorer.sequence_logits(USER[None]) if weights.sequence else None
    text = scorer.text_cosines(REQUEST[None], [history]) if weights.text else None
    assert bool(served.understood) == bool(query)  # the intent term runs where the weights read the query
    intent = (IntentModel([HEAD], encoder_version="1").item_scores(served.understood, CATALOG, IDS)[None]
              if served.understood else None)
    offline = scorer.fused(weights, sequence=sequence, text=text, intent=intent)[0]
    np.testing.assert_allclose([served_scores[i] for i in IDS], offline, rtol=1e-5, atol=1e-5)
