"""The hybrid retriever: sources, fusion, pinned versions, new items, the text-free path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.errors import Unavailable
from services.core.catalog import Catalog, Item
from services.core.contracts import SEQUENCE_ENCODER, TEXT_ENCODER
from services.core.fusion import RetrievalFusion, SourceWeights
from services.core.index import COSINE, DOT
from services.retrieval.retriever import HYBRID, POPULARITY, SEQUENCE, TEXT, Retriever, Snapshot
from tests.unit.services.retrieval.helpers import TEXT_ONLY, item_index, make_retriever, retrieval_fusion

ITEMS = [Item(str(i), f"Movie {i}", 1990 + i, ("Comedy",) if i % 2 else ("Drama",)) for i in range(1, 9)]
NEW_ITEM = Item("99", "Brand New", 2024, ("Comedy",))


@pytest.fixture
def snapshot(tmp_path: Path) -> Snapshot:
    rng = np.random.default_rng(0)
    ids = [i.item_id for i in ITEMS]
    text_ids = [*ids, NEW_ITEM.item_id]  # the new item has text but no interactions yet
    text = item_index(tmp_path / "text", text_ids, rng.normal(size=(len(text_ids), 4)), model=TEXT_ENCODER,
                      version="2", metric=COSINE, popularity=[*range(len(ids), 0, -1), 0])
    sequence = item_index(tmp_path / "seq", ids, np.eye(8), model=SEQUENCE_ENCODER, version="1", metric=DOT,
                          popularity=list(range(len(ids), 0, -1)))
    return Snapshot(text, sequence)


class Models:
    """Stand-ins for the two Triton models: record calls, answer from fixed vectors, report versions."""

    def __init__(self, text_version: str = "2", sequence_version: str = "1", sequence_fails: bool = False):
        self.calls: list[tuple[str, str]] = []
        self.text_version, self.sequence_version, self.sequence_fails = text_version, sequence_version, sequence_fails
        self.text_vector = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
        self.user_vector = np.array([0, 0, 5.0, 0, 0, 0, 0, 0], dtype=np.float32)  # prefers item "3"

    async def encode_text(self, text: str, timeout_s: float, version: str):
        self.calls.append(("text", version))
        return self.text_vector, self.text_version

    async def encode_history(self, ids, timeout_s: float, version: str):
        self.calls.append(("sequence", version))
        if self.sequence_fails:
            raise Unavailable("model sequence_encoder unavailable")
        return self.user_vector, self.sequence_version


FUSION = retrieval_fusion(text=1.0, popularity=0.0)


def _retriever(snapshot: Snapshot, models: Models, fusion: RetrievalFusion | None = None) -> Retriever:
    return make_retriever(snapshot, Catalog({i.item_id: i for i in [*ITEMS, NEW_ITEM]}),
                          encode_text=models.encode_text, encode_history=models.encode_history,
                          fusion=fusion or FUSION, max_k=20, source_candidates=100, default_k=3)


async def test_without_a_query_only_the_sequence_model_is_called(snapshot: Snapshot) -> None:
    models = Models()
    result = await _retriever(snapshot, models).retrieve(["1"], "", [], 3, 5.0)
    assert models.calls == [("sequence", "1")]  # pinned to the index's version; no text-encoder call
    assert result.strategy == SEQUENCE and result.candidates[0][0] == "3"
    assert "1" not in [i for i, _ in result.candidates]
    assert result.model_versions == [("sequence_encoder", "1")]


async def test_with_a_query_both_sources_are_fused(snapshot: Snapshot) -> None:
    models = Models()
    result = await _retriever(snapshot, models).retrieve(["1"], "a comedy", [], 8, 5.0)
    assert sorted(models.calls) == [("sequence", "1"), ("text", "2")]
    assert result.strategy == HYBRID and len(result.candidates) == 8
    scores = [s for _, s in result.candidates]
    assert scores == sorted(scores, reverse=True)


async def test_a_new_catalog_item_is_reachable_through_the_text(snapshot: Snapshot) -> None:
    models = Models()
    text_ids = list(snapshot.text.item_ids)
    models.text_vector = snapshot.text.vectors_for([NEW_ITEM.item_id])[0]  # the query describes the new item
    only_text = RetrievalFusion(with_query=SourceWeights(sequence=1.0, text=5.0, popularity=0.0),
                                without_query=SourceWeights(),
                                without_sequence=TEXT_ONLY)
    result = await _retriever(snapshot, models, only_text).retrieve(["1"], "something brand new", [], 3, 5.0)
    assert NEW_ITEM.item_id in text_ids and NEW_ITEM.item_id not in snapshot.sequence
    assert NEW_ITEM.item_id in [i for i, _ in result.candidates]


async def test_without_history_text_and_popularity_answer(snapshot: Snapshot) -> None:
    models = Models()
    result = await _retriever(snapshot, models).retrieve([], "a comedy", [], 3, 5.0)
    assert models.calls == [("text", "2")] and result.strategy == TEXT
    nothing = await _retriever(snapshot, Models()).retrieve([], "", [], 3, 5.0)
    assert nothing.strategy == POPULARITY and [i for i, _ in nothing.candidates] == ["1", "2", "3"]


async def test_a_vector_from_another_model_version_is_refused(snapshot: Snapshot) -> None:
    with pytest.raises(Unavailable, match="version"):
        await _retriever(snapshot, Models(text_version="3")).retrieve([], "a comedy", [], 3, 5.0)


async def test_a_failing_sequence_model_degrades_to_text(snapshot: Snapshot) -> None:
    models = Models(sequence_fails=True)
    result = await _retriever(snapshot, models).retrieve(["1"], "", [], 3, 5.0)
    assert result.strategy == TEXT and len(result.candidates) == 3
    assert models.calls == [("sequence", "1"), ("text", "2")]


async def test_caller_candidates_are_scored_by_the_fused_rule(snapshot: Snapshot) -> None:
    result = await _retriever(snapshot, Models()).retrieve(["1"], "", [], 0, 5.0, ["5", "3", "99"])
    assert [i for i, _ in result.candidates][0] == "3" and len(result.candidates) == 3


async def test_install_switches_later_requests_to_the_new_pair(snapshot: Snapshot, tmp_path: Path) -> None:
    models = Models()
    retriever = _retriever(snapshot, models)
    newer = item_index(tmp_path / "seq2", list(snapshot.sequence.item_ids), np.eye(8), model=SEQUENCE_ENCODER,
                       version="2", metric=DOT, popularity=[1] * 8)
    retriever.install(Snapshot(snapshot.text, newer))
    models.sequence_version = "2"
    await retriever.retrieve(["1"], "", [], 3, 5.0)
    assert models.calls[-1] == ("sequence", "2")


def test_the_served_fusion_weights_are_the_committed_fit() -> None:
    from services.retrieval.settings import RetrievalSettings
    from tools.train.retrieval_fusion import read_retrieval_fusion

    assert RetrievalSettings().fusion() == read_retrieval_fusion()


def test_a_fitted_weights_file_replaces_the_settings_and_a_bad_one_stops_the_start(tmp_path) -> None:
    import json

    import pytest

    from services.core.fusion import RetrievalFusion, SourceWeights
    from services.retrieval.settings import RetrievalSettings

    fitted = RetrievalFusion(with_query=SourceWeights(sequence=1.0, text=2.0, popularity=0.1, intent=1.0),
                             without_query=SourceWeights(sequence=1.0, text=0.0, popularity=0.2),
                             without_sequence=SourceWeights(sequence=0.0, text=1.0, popularity=0.3))
    path = tmp_path / "retrieval_fusion.json"
    path.write_text(json.dumps({"fusion": fitted.to_json(), "validation_users": 10}))
    assert RetrievalSettings(fusion_path=path).fusion() == fitted
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a fitted retrieval weights file"):
        RetrievalSettings(fusion_path=path).fusion()
