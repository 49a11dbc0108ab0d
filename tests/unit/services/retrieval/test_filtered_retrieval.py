"""Attribute filters inside retrieval, over real FAISS item indexes: a narrow filter still yields K candidates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.core.catalog import Catalog, Item
from services.core.filters import AttributeFilter, CatalogAttributes, first_violation
from services.retrieval.retriever import POPULARITY, Retriever, Snapshot
from tests.unit.services.retrieval.helpers import make_retriever, retrieval_fusion, snapshot_of

N = 3_000
COMMON = ("Comedy", "Drama", "Action", "Romance", "Thriller")
RARE = "Western"  # 25 items: far fewer than the sources' 20-candidate fetch would ever reach unfiltered
RARE_IDS = {str(i) for i in range(7, N, 120)}
SEQ_DIM, TEXT_DIM = 16, 8
FUSION = retrieval_fusion(text=1.0, popularity=0.5)


def _catalog() -> Catalog:
    items = {}
    for i in range(N):
        genres = (RARE,) if str(i) in RARE_IDS else (COMMON[i % 5], COMMON[(i * 7) % 5])
        items[str(i)] = Item(str(i), f"Item {i}", 1950 + i % 70, tuple(dict.fromkeys(genres)))
    return Catalog(items)


CATALOG = _catalog()
RNG = np.random.default_rng(3)
SEQ_VECTORS = RNG.normal(size=(N, SEQ_DIM)).astype(np.float32)
POPULARITY_COUNTS = RNG.integers(0, 500, size=N)
USER = RNG.normal(size=SEQ_DIM).astype(np.float32)
# The user's taste points away from the rare items, so an unfiltered top list holds none of them.
SEQ_VECTORS[[int(i) for i in RARE_IDS]] = -np.abs(USER) * np.sign(USER) * 0.2


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    base: Path = tmp_path_factory.mktemp("filtered")
    return snapshot_of(base, list(CATALOG.items), SEQ_VECTORS, RNG.normal(size=(N, TEXT_DIM)),
                       popularity=POPULARITY_COUNTS.tolist())


async def _encode_text(text: str, timeout_s: float, version: str):
    return np.ones(TEXT_DIM, dtype=np.float32) / np.sqrt(TEXT_DIM), "1"


async def _encode_history(ids, timeout_s: float, version: str):
    return USER, "1"


def _retriever(snapshot: Snapshot, *, exact_max: int = 5_000) -> Retriever:
    return make_retriever(snapshot, CATALOG, encode_text=_encode_text, encode_history=_encode_history, fusion=FUSION,
                          max_k=1_000, exact_filter_max_items=exact_max)


def _brute_force(allowed: set[str], exclude: set[str], k: int) -> list[str]:
    """The no-query fused rule over every allowed item, by hand: s_seq + 0.5 * log(1 + count)."""
    scores = SEQ_VECTORS.astype(np.float64) @ USER.astype(np.float64) + 0.5 * np.log1p(POPULARITY_COUNTS)
    ids = [i for i in CATALOG.items if i in allowed and i not in exclude]
    return sorted(ids, key=lambda i: (-scores[int(i)], int(i)))[:k]


@pytest.mark.parametrize("exact_max", [5_000, 0], ids=["exact", "over-fetch"])
async def test_a_narrow_filter_still_yields_k_candidates(snapshot: Snapshot, exact_max: int) -> None:
    retriever = _retriever(snapshot, exact_max=exact_max)
    unfiltered = await retriever.retrieve(["1"], "", [], 20, 5.0)
    assert not RARE_IDS & {i for i, _ in unfiltered.candidates}  # unfiltered, the rare genre never shows up
    rare = AttributeFilter.any_of("genres", [RARE])
    result = await retriever.retrieve(["1"], "", [], 20, 5.0, filters=[rare])
    ids = [i for i, _ in result.candidates]
    assert len(ids) == 20 and set(ids) <= RARE_IDS
    assert ids == _brute_force(RARE_IDS, {"1"}, 20)


async def test_too_few_matching_items_give_fewer_candidates_and_none_give_none(snapshot: Snapshot) -> None:
    retriever = _retriever(snapshot)
    few = [AttributeFilter.any_of("genres", [RARE]), AttributeFilter.between("year", 1950, 1990)]
    expected = {i for i in RARE_IDS if CATALOG[i].year <= 1990}
    result = await retriever.retrieve(["1"], "", [], 50, 5.0, filters=few)
    assert {i for i, _ in result.candidates} == expected and len(expected) < 50
    nothing = await retriever.retrieve(["1"], "", [], 20, 5.0, filters=[AttributeFilter.any_of("genres", ["Opera"])])
    assert nothing.candidates == []


async def test_a_broad_filter_over_fetches_from_faiss_and_keeps_k(snapshot: Snapshot) -> None:
    broad = [AttributeFilter.any_of("genres", ["Comedy"]), AttributeFilter.any_of("genres", ["Drama"], exclude=True)]
    allowed = CatalogAttributes(CATALOG).eligible(broad)
    assert len(allowed) > 100  # above the exact threshold used here: the FAISS search path
    result = await _retriever(snapshot, exact_max=100).retrieve(["1"], "a comedy", ["2", "3"], 20, 5.0,
                                                                 filters=broad)
    ids = [i for i, _ in result.candidates]
    assert len(ids) == 20 and set(ids) <= allowed and not {"1", "2", "3"} & set(ids)


async def test_the_popularity_fallback_is_filtered(snapshot: Snapshot) -> None:
    for exact_max in (5_000, 0):
        result = await _retriever(snapshot, exact_max=exact_max).retrieve(
            [], "", [], 10, 5.0, filters=[AttributeFilter.any_of("genres", [RARE])])
        assert result.strategy == POPULARITY
        ids = [i for i, _ in result.candidates]
        by_count = sorted(RARE_IDS, key=lambda i: (-POPULARITY_COUNTS[int(i)], int(i)))[:10]
        assert ids == by_count


async def test_caller_candidates_that_a_filter_does_not_allow_are_left_out(snapshot: Snapshot) -> None:
    rare = sorted(RARE_IDS)[:2]
    result = await _retriever(snapshot).retrieve(["1"], "", [], 0, 5.0, ["0", *rare, "5"],
                                                 filters=[AttributeFilter.any_of("genres", [RARE])])
    assert sorted(i for i, _ in result.candidates) == rare


async def test_invalid_filters_are_invalid_arguments_naming_the_field(snapshot: Snapshot) -> None:
    with pytest.raises(InvalidArgument, match=r'filters\[1\].attribute: unknown attribute "colour"; known: genres, '
                                              r"year"):
        await _retriever(snapshot).retrieve(["1"], "", [], 20, 5.0, filters=[
            AttributeFilter.any_of("genres", [RARE]), AttributeFilter.any_of("colour", ["red"])])


_filters = st.lists(st.one_of(
    st.builds(AttributeFilter.any_of, st.just("genres"),
              st.lists(st.sampled_from([*COMMON, RARE, "Opera"]), min_size=1, max_size=3), exclude=st.booleans()),
    st.builds(AttributeFilter.all_of, st.just("genres"),
              st.lists(st.sampled_from(COMMON), min_size=1, max_size=2), exclude=st.booleans()),
    st.tuples(st.integers(1940, 2025), st.integers(0, 30), st.booleans())
    .map(lambda t: AttributeFilter.between("year", t[0], t[0] + t[1], exclude=t[2])),
), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(filters=_filters, k=st.integers(1, 60), exact=st.booleans(),
       history=st.lists(st.sampled_from(sorted(RARE_IDS)[:5] + ["0", "1", "2"]), max_size=3, unique=True))
def test_no_candidate_breaks_a_filter_and_k_come_back_when_k_match(snapshot, filters, k, exact, history) -> None:
    retriever = _retriever(snapshot, exact_max=5_000 if exact else 0)
    result = asyncio.run(retriever.retrieve(history or ["1"], "", [], k, 5.0, filters=filters))
    ids = [i for i, _ in result.candidates]
    allowed = CatalogAttributes(CATALOG).eligible(filters)
    exclude = set(history or ["1"])
    assert len(ids) == len(set(ids)) == min(k, len(allowed - exclude))
    assert all(first_violation(CATALOG[i], filters) is None and i not in exclude for i in ids)
    if exact:
        assert ids == _brute_force(set(allowed), exclude, k)
