"""The gateway acts on a query's reading: hard exclusions and bounds, wanted values relaxed in order, references
as history, and a reader failure that degrades to the query as written."""

from __future__ import annotations

import asyncio

from services.common.errors import Unavailable
from services.core.catalog import Catalog, Item
from services.core.filters import ALL, AttributeFilter
from services.core.reading import ReadFilter, Reading, Reference
from services.gateway.reading import ReadingPlan
from services.gateway.recommender import Recommender, RecommendQuery
from services.gateway.settings import GatewaySettings
from tests.unit.services.gateway.histories import Histories

GENRES = ("Comedy", "Horror", "Romance", "Drama")
CATALOG = Catalog({str(i): Item(str(i), f"Film {i}", 1950 + i, (GENRES[i % 4], GENRES[(i + 1) % 4]))
                   for i in range(1, 41)})
STORE = Histories({"u": ["1", "2"]})
COMEDY_HORROR = AttributeFilter.all_of("genres", ["Comedy", "Horror"])
NO_ROMANCE = AttributeFilter.any_of("genres", ["Romance"], exclude=True)
AFTER_1960 = AttributeFilter.between("year", 1961, None)


class Stages:
    """Retrieval returns every catalog item the filters allow (best first by id), never history or exclusions."""

    def __init__(self, reading: Reading | None) -> None:
        self.reading = reading
        self.retrievals: list[tuple] = []

    async def read(self, query, *, timeout_s):
        if self.reading is None:
            raise Unavailable("request_reader is not ready")
        return self.reading, [("request_reader", "1")]

    async def retrieve(self, history, query, *, exclude, k, timeout_s, candidates=(), filters=()):
        self.retrievals.append((list(history), query, list(exclude), list(filters)))
        pool = candidates or [i for i in CATALOG.items if i not in set(history) | set(exclude)]
        allowed = [i for i in pool if all(f.allows(CATALOG[i]) for f in filters)]
        return [(i, 1.0 / int(i)) for i in allowed][: k or None], [], []

    async def instruct(self, history, query, *, candidates, timeout_s, reading=None):
        return f"instruction ({reading.describe() if reading else ''})", "T", [], False

    async def rank(self, instruction, *, candidates, timeout_s, retrieval_scores=()):
        return [(c, 1.0) for c in candidates], []


def _reading(*filters: AttributeFilter, references=(), residual="something", confidence=0.9) -> Reading:
    return Reading(tuple(ReadFilter(f, confidence, "words") for f in filters), tuple(references), residual)


def _recommend(stages: Stages, query: str = "a request", num_items: int = 5, settings: dict | None = None, **q):
    recommender = Recommender(GatewaySettings(**(settings or {})), CATALOG, STORE, stages)
    return asyncio.run(recommender.recommend(RecommendQuery(user_id="u", query=query, num_items=num_items, **q),
                                             None))


def test_read_exclusions_bounds_and_wanted_values_are_filters_from_the_query() -> None:
    stages = Stages(_reading(COMEDY_HORROR, NO_ROMANCE, AFTER_1960, residual="a scary laugh"))
    result = _recommend(stages, num_items=3)
    assert result.items and result.relaxed_constraints == []
    for item_id, _, _ in result.items:
        assert all(f.allows(CATALOG[item_id]) for f in (COMEDY_HORROR, NO_ROMANCE, AFTER_1960))
    assert {(f.filter, f.source) for f in result.applied_filters} == {
        (COMEDY_HORROR, "query"), (NO_ROMANCE, "query"), (AFTER_1960, "query")}
    assert stages.retrievals[0][1] == "a scary laugh"  # retrieval searches with the residual text
    assert "genres all of [Comedy, Horror]" in result.instruction  # the instruction states the reading
    assert ("reading" in dict(result.stage_timings)) and ("request_reader", "1") in result.model_versions


def test_a_request_few_items_meet_gets_those_few_not_a_padded_page() -> None:
    result = _recommend(Stages(_reading(COMEDY_HORROR, NO_ROMANCE, AFTER_1960)), num_items=20)
    assert result.relaxed_constraints == [] and result.fewer_items and 0 < len(result.items) < 20
    assert all(f.allows(CATALOG[i]) for i, _, _ in result.items for f in (COMEDY_HORROR, NO_ROMANCE, AFTER_1960))


def test_a_request_no_item_meets_is_relaxed_by_default() -> None:
    comedy_romance = AttributeFilter.all_of("genres", ["Comedy", "Romance"])  # never together in CATALOG
    result = _recommend(Stages(_reading(comedy_romance, AFTER_1960)), num_items=5)
    assert result.relaxed_constraints == ["genres all of [Comedy, Romance] -> any of"] and len(result.items) == 5
    assert all(AFTER_1960.allows(CATALOG[i]) for i, _, _ in result.items)


def test_wanted_values_relax_all_of_then_drop_never_an_exclusion_or_a_bound() -> None:
    result = _recommend(Stages(_reading(COMEDY_HORROR, NO_ROMANCE, AFTER_1960)), num_items=20,
                        settings={"relax_below_items": 20})  # pad every page
    assert result.relaxed_constraints == ["genres all of [Comedy, Horror] -> any of",
                                          "dropped genres any of [Comedy, Horror]"]
    assert all(NO_ROMANCE.allows(CATALOG[i]) and AFTER_1960.allows(CATALOG[i]) for i, _, _ in result.items)
    assert {f.filter for f in result.applied_filters} == {NO_ROMANCE, AFTER_1960}


def test_references_join_the_history_and_are_never_returned() -> None:
    stages = Stages(_reading(references=[Reference("film 7", "7", "Film 7", 90.0, 0.9)]))
    result = _recommend(stages, num_items=10)
    history, _, exclude, _ = stages.retrievals[0]
    assert history == ["1", "2", "7"] and "7" in exclude
    assert "7" not in {i for i, _, _ in result.items}


def test_low_confidence_parts_are_not_filters() -> None:
    result = _recommend(Stages(_reading(NO_ROMANCE, confidence=0.2)), num_items=10)
    assert result.applied_filters == [] and any(
        "Romance" in CATALOG[i].genres for i, _, _ in result.items)


def test_a_failed_reader_degrades_to_the_query_as_written() -> None:
    stages = Stages(None)
    result = _recommend(stages, query="anything except dramas")
    assert result.degraded and result.reading is None and result.items
    assert any("reading skipped" in r for r in result.degraded_reasons)
    assert stages.retrievals[0][1] == "anything except dramas"


def test_the_plan_without_a_reading_is_the_query_as_written() -> None:
    plan = ReadingPlan(None, "funny")
    assert plan.retrieval_query == "funny" and plan.history(["1"]) == ["1"] and [s.filters for s in plan.steps()] == [
        ()]
    assert COMEDY_HORROR.match == ALL
