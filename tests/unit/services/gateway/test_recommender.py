import asyncio

import pytest

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.core.catalog import Catalog, Item
from services.core.reading import Reading
from services.gateway.recommender import Recommender, RecommendQuery
from services.gateway.settings import GatewaySettings
from tests.unit.services.gateway.histories import Histories

CATALOG = Catalog({str(i): Item(str(i), f"Movie {i}", 2000) for i in range(40)})
STORE = Histories({"u1": ["1", "2", "3"]})


class Stages:
    """Unit-test double for the downstream services: records calls, reverses the candidates when ranking."""

    def __init__(self, rank_error: Exception | None = None, rank_delay_s: float = 0.0,
                 retrieve_error: Exception | None = None) -> None:
        self.calls: list[tuple] = []
        self.rank_error = rank_error
        self.rank_delay_s = rank_delay_s
        self.retrieve_error = retrieve_error
        self.retrieval_scores: list[list[float]] = []

    async def retrieve(self, history, query, *, exclude, k, timeout_s, candidates=(), filters=()):
        self.calls.append(("retrieve", list(history), query, list(exclude), k))
        self.filters = list(filters)
        if self.retrieve_error:
            raise self.retrieve_error
        if candidates:  # scores every given item, best (lowest id) first
            return (sorted(((c, 1.0 - int(c) / 100) for c in candidates), key=lambda x: -x[1]),
                    [("text_encoder", "1")], [])
        skip = set(history) | set(exclude)
        understood = [("genres", "Comedy", 0.9)] if "laugh" in query else []
        found = [(str(i), 1.0 - i / 100) for i in range(40) if str(i) not in skip][:k]
        return found, [("text_encoder", "1")], understood

    async def read(self, query, *, timeout_s):  # a reader that finds no constraint: the query as written
        return Reading(residual_text=query), []

    async def instruct(self, history, query, *, candidates, timeout_s, reading=None):
        self.calls.append(("instruct", list(history), query, list(candidates)))
        return f"rank {len(candidates)}", "P1-I0-T3-0", [], len(query) > 50

    async def rank(self, instruction, *, candidates, timeout_s, retrieval_scores=()):
        self.calls.append(("rank", instruction, list(candidates), timeout_s))
        self.retrieval_scores.append(list(retrieval_scores))
        await asyncio.sleep(self.rank_delay_s)
        if self.rank_error:
            raise self.rank_error
        return [(c, 0.5) for c in reversed(candidates)], [("ranker", "2")]


def recommender(stages, **overrides) -> Recommender:
    return Recommender(GatewaySettings(**overrides), CATALOG, STORE, stages)


async def test_known_user_gets_ranked_items_never_from_history_or_exclusions():
    stages = Stages()
    r = await recommender(stages).recommend(RecommendQuery(user_id="u1", exclude_item_ids=["4"]), None)
    assert stages.calls[0] == ("retrieve", ["1", "2", "3"], "", ["4"], 20)
    ids = [i for i, _, _ in r.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not {"1", "2", "3", "4"} & set(ids)
    assert ids[0] == stages.calls[1][3][-1]  # the ranker's order, not retrieval's
    assert r.items[0][1] == f"Movie {ids[0]} (2000)"
    assert not r.degraded and ("ranker", "2") in r.model_versions and r.instruction == "rank 20"
    assert [s for s, _ in r.stage_timings] == ["history", "retrieval", "instruction", "ranking"]


async def test_request_history_replaces_stored_history_and_unknown_ids_are_reported():
    stages = Stages()
    r = await recommender(stages).recommend(
        RecommendQuery(user_id="u1", history_item_ids=["5", "ghost"], num_items=3), None
    )
    assert stages.calls[0][1] == ["5"]
    assert r.unknown_history_item_ids == ["ghost"]
    assert len(r.items) == 3


async def test_retrieved_candidates_go_to_the_ranker_with_their_retrieval_scores():
    stages = Stages()
    await recommender(stages).recommend(RecommendQuery(user_id="u1", num_items=3), None)
    ranked = stages.calls[-1][2]
    assert stages.retrieval_scores[-1] == [pytest.approx(1.0 - int(i) / 100) for i in ranked]


async def test_supplied_candidates_are_scored_not_searched_and_all_ranked_in_the_callers_label_order():
    stages = Stages()
    r = await recommender(stages).recommend(RecommendQuery(user_id="u1", candidate_item_ids=["9", "7", "8"]), None)
    assert [c[0] for c in stages.calls] == ["retrieve", "instruct", "rank"]
    assert stages.calls[1][3] == ["9", "7", "8"] and stages.calls[2][2] == ["9", "7", "8"]
    assert stages.retrieval_scores[-1] == [pytest.approx(0.91), pytest.approx(0.93), pytest.approx(0.92)]
    assert [i for i, _, _ in r.items] == ["8", "7", "9"]
    assert not r.degraded and [s for s, _ in r.stage_timings] == ["history", "retrieval", "instruction", "ranking"]


async def test_without_fusion_supplied_candidates_skip_retrieval_and_the_ranker_gets_no_scores():
    stages = Stages()
    r = await recommender(stages, fuse_retrieval_scores=False).recommend(
        RecommendQuery(candidate_item_ids=["7", "8", "9"]), None
    )
    assert [c[0] for c in stages.calls] == ["instruct", "rank"]
    assert stages.retrieval_scores == [[]]
    assert [i for i, _, _ in r.items] == ["9", "8", "7"]


async def test_scoring_failure_for_supplied_candidates_degrades_to_the_ranker_alone():
    stages = Stages(retrieve_error=Unavailable("retrieval: unavailable"))
    r = await recommender(stages).recommend(RecommendQuery(candidate_item_ids=["7", "8", "9"]), None)
    assert r.degraded and r.degraded_reasons == ["retrieval scores skipped: retrieval: unavailable"]
    assert stages.retrieval_scores == [[]]
    assert [i for i, _, _ in r.items] == ["9", "8", "7"]


async def test_ranker_failure_with_supplied_candidates_returns_their_retrieval_order():
    stages = Stages(rank_error=Unavailable("ranking: down"))
    r = await recommender(stages).recommend(RecommendQuery(candidate_item_ids=["9", "7", "8"]), None)
    assert r.degraded and [i for i, _, _ in r.items] == ["7", "8", "9"]


async def test_ranker_failure_returns_retrieval_order_marked_degraded():
    r = await recommender(Stages(rank_error=Unavailable("ranking: model ranker unavailable"))).recommend(
        RecommendQuery(user_id="u1"), None
    )
    assert r.degraded and "ranking skipped" in r.degraded_reasons[0]
    assert [i for i, _, _ in r.items] == ["0", "4", "5", "6", "7", "8", "9", "10", "11", "12"]


async def test_ranking_hop_keeps_a_reserve_before_the_callers_deadline():
    stages = Stages(rank_error=DeadlineExceeded("ranking: deadline"))
    r = await recommender(stages, degrade_reserve_s=0.05).recommend(RecommendQuery(user_id="u1"), 0.5)
    assert stages.calls[-1][3] <= 0.45
    assert r.degraded


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (RecommendQuery(num_items=-1), "num_items"),
        (RecommendQuery(num_items=21), "num_items"),
        (RecommendQuery(query="x" * 1001), "query"),
        (RecommendQuery(user_id="u" * 300), "user_id"),
        (RecommendQuery(history_item_ids=["1", ""]), r"history_item_ids\[1\]"),
        (RecommendQuery(candidate_item_ids=["1", "1"]), "candidate_item_ids"),
        (RecommendQuery(candidate_item_ids=["1", "nope"]), "candidate_item_ids"),
        (RecommendQuery(candidate_item_ids=[str(i) for i in range(21)]), "candidate_item_ids"),
    ],
)
async def test_invalid_requests_name_the_field(query, field):
    with pytest.raises(InvalidArgument, match=field):
        await recommender(Stages()).recommend(query, None)


async def test_expired_deadline_fails_before_calling_anything():
    stages = Stages()
    with pytest.raises(DeadlineExceeded):
        await recommender(stages).recommend(RecommendQuery(user_id="u1"), 0.0)
    assert stages.calls == []


async def test_a_scoring_reply_that_is_not_the_candidates_degrades_to_the_ranker_alone():
    class OldRetrieval(Stages):  # ignores candidate_item_ids: searches instead
        async def retrieve(self, history, query, *, exclude, k, timeout_s, candidates=(), filters=()):
            return await super().retrieve(history, query, exclude=exclude, k=k or 20, timeout_s=timeout_s)

    stages = OldRetrieval()
    r = await recommender(stages).recommend(RecommendQuery(candidate_item_ids=["37", "38", "39"]), None)
    assert r.degraded and "not the 3 candidates" in r.degraded_reasons[0]
    assert stages.retrieval_scores == [[]] and [i for i, _, _ in r.items] == ["39", "38", "37"]
