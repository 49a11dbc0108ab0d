"""Filters and business rules in the gateway: what reaches retrieval, what is returned, what is reported."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from instructrec.v1 import common_pb2, recommend_service_pb2, recommend_service_pb2_grpc
from prometheus_client import REGISTRY

from services.common.errors import InvalidArgument
from services.common.server import ServiceRunner
from services.core.catalog import Catalog, Item
from services.core.filters import AttributeFilter, CatalogAttributes, DiversityRule, first_violation, over_cap
from services.core.reading import Reading
from services.core.rules import REMOVED_BLOCKED, REMOVED_FILTER, Pin, Policy, Rules, RulesFormatError
from services.gateway.recommender import Recommender, RecommendQuery
from services.gateway.rules_watcher import RulesWatcher
from services.gateway.servicer import RecommendServicer
from services.gateway.settings import GatewaySettings
from tests.unit.services.gateway.histories import Histories

GENRES = ("Comedy", "Drama", "Horror", "Documentary", "Western")
# Western is rare: items 5, 55, 105, ...; the rest by id % 4.
CATALOG = Catalog({str(i): Item(str(i), f"Movie {i}", 1960 + i % 50,
                                ("Western",) if i % 50 == 5 else (GENRES[i % 4], GENRES[(i + 1) % 4]))
                   for i in range(200)})
ATTRS = CatalogAttributes(CATALOG)
STORE = Histories({"u1": ["1", "2", "3"]})


class FilteringStages:
    """Stand-in stages: retrieval applies the filters like the retrieval service (best = lowest id) or, with
    ``leaky``, ignores them (so the gateway's own check is what keeps the answer clean)."""

    def __init__(self, leaky: bool = False) -> None:
        self.leaky = leaky
        self.retrieve_calls: list[dict] = []

    async def retrieve(self, history, query, *, exclude, k, timeout_s, candidates=(), filters=()):
        self.retrieve_calls.append({"exclude": list(exclude), "k": k, "filters": list(filters),
                                    "candidates": list(candidates)})
        allowed = None if self.leaky else ATTRS.eligible(list(filters))
        if candidates:
            return [(c, 1.0 - int(c) / 1000) for c in candidates if allowed is None or c in allowed], [], []
        skip = set(history) | set(exclude)
        ids = [i for i in CATALOG.items if i not in skip and (allowed is None or i in allowed)]
        return [(i, 1.0 - int(i) / 1000) for i in ids[:k]], [("text_encoder", "1")], []

    async def read(self, query, *, timeout_s):  # a reader that finds no constraint: the query as written
        return Reading(residual_text=query), []

    async def instruct(self, history, query, *, candidates, timeout_s, reading=None):
        return f"rank {len(candidates)}", "P1-I0-T3-0", [], False

    async def rank(self, instruction, *, candidates, timeout_s, retrieval_scores=()):
        return [(c, 0.5 - n / 100) for n, c in enumerate(candidates)], [("ranker", "2")]


def _recommender(stages, rules: Rules | None = None, **overrides) -> Recommender:
    return Recommender(GatewaySettings(**overrides), CATALOG, STORE, stages,
                       rules=(lambda: rules) if rules else None, attributes=ATTRS)


async def test_filters_go_to_retrieval_and_every_returned_item_meets_them() -> None:
    stages = FilteringStages()
    filters = [AttributeFilter.any_of("genres", ["Comedy"]), AttributeFilter.between("year", 1970, 1989)]
    r = await _recommender(stages).recommend(RecommendQuery(user_id="u1", filters=filters), None)
    assert stages.retrieve_calls[0]["filters"] == filters
    assert len(r.items) == 10 and not r.fewer_items
    assert all(first_violation(CATALOG[i], filters) is None for i, _, _ in r.items)
    assert [(f.source, f.filter) for f in r.applied_filters] == [("request", f) for f in filters]


async def test_a_filter_that_matches_nothing_gives_an_empty_answer_not_an_error() -> None:
    r = await _recommender(FilteringStages()).recommend(
        RecommendQuery(user_id="u1", filters=[AttributeFilter.any_of("genres", ["Opera"])]), None)
    assert r.items == [] and r.fewer_items and not r.degraded and r.instruction == ""


async def test_too_few_matching_items_are_returned_and_said() -> None:
    westerns = [AttributeFilter.any_of("genres", ["Western"])]
    r = await _recommender(FilteringStages()).recommend(RecommendQuery(filters=westerns, num_items=10), None)
    assert [i for i, _, _ in r.items] == ["5", "55", "105", "155"] and r.fewer_items


async def test_the_gateway_removes_what_a_leaky_retrieval_returned() -> None:
    filters = [AttributeFilter.any_of("genres", ["Horror"], exclude=True)]
    r = await _recommender(FilteringStages(leaky=True)).recommend(RecommendQuery(filters=filters), None)
    assert len(r.items) == 10 and all(first_violation(CATALOG[i], filters) is None for i, _, _ in r.items)
    assert {x.reason for x in r.removed} == {REMOVED_FILTER}


async def test_caller_candidates_are_filtered_and_the_removed_ones_named() -> None:
    stages = FilteringStages()
    r = await _recommender(stages, rules=Rules("r7", blocked_item_ids=frozenset({"8"}))).recommend(
        RecommendQuery(candidate_item_ids=["4", "2", "8", "12", "16"],
                       filters=[AttributeFilter.any_of("genres", ["Horror"], exclude=True)]), None)
    # "2" is Horror/Documentary, "8" is blocked; the others are Comedy/Drama.
    assert stages.retrieve_calls[0]["candidates"] == ["4", "12", "16"]
    assert [i for i, _, _ in r.items] == ["4", "12", "16"]
    assert [(x.item_id, x.reason) for x in r.removed] == [("2", REMOVED_FILTER), ("8", REMOVED_BLOCKED)]
    assert r.removed[0].detail == "exclude genres any of [Horror] (request)"
    assert r.removed[1].detail == "blocked item (rules r7)"
    assert r.fewer_items and r.rules_version == "r7"


async def test_blocked_items_go_to_retrieval_as_exclusions_and_values_as_filters() -> None:
    rules = Rules("v3", blocked_item_ids=frozenset({"10", "11"}),
                  blocked=(AttributeFilter.any_of("genres", ["Documentary"], exclude=True),))
    stages = FilteringStages()
    r = await _recommender(stages, rules).recommend(RecommendQuery(exclude_item_ids=["4"]), None)
    call = stages.retrieve_calls[0]
    assert call["exclude"] == ["4", "10", "11"] and call["filters"] == list(rules.blocked)
    assert not {"4", "10", "11"} & {i for i, _, _ in r.items}
    assert all("Documentary" not in CATALOG[i].genres for i, _, _ in r.items)
    assert r.rules_version == "v3" and "blocked items: 2 (rules v3)" in r.applied_rules
    assert [f.source for f in r.applied_filters] == ["rules"]


async def test_a_diversity_cap_retrieves_a_larger_pool_and_still_fills_num_items() -> None:
    stages = FilteringStages()
    rule = DiversityRule("genres", 2)
    r = await _recommender(stages).recommend(RecommendQuery(num_items=6, diversity=rule), None)
    # Items carry two of four genres (plus a few Westerns): the first 20 by retrieval order hold only five
    # items under the cap, so the gateway ranks a cap-keeping selection from a pool of 100.
    assert stages.retrieve_calls[0]["k"] == 100
    ids = [i for i, _, _ in r.items]
    assert len(ids) == 6 and not r.fewer_items and not over_cap(ids, CATALOG, rule)
    assert "diversity: at most 2 items per genres value (request)" in r.applied_rules


async def test_caller_defaults_apply_to_that_caller_and_pins_are_placed() -> None:
    from services.core.rules import CallerDefaults

    rules = Rules("v9", pins=(Pin("148", 1),), callers={
        "kids": CallerDefaults((AttributeFilter.any_of("genres", ["Comedy"]),), DiversityRule("year", 1))})
    r = await _recommender(FilteringStages(), rules).recommend(RecommendQuery(caller_id="kids", num_items=5), None)
    ids = [i for i, _, _ in r.items]
    assert ids[0] == "148" and all("Comedy" in CATALOG[i].genres for i in ids)
    assert len({CATALOG[i].year for i in ids}) == len(ids)
    assert "caller defaults: kids" in r.applied_rules and "pinned 148 at position 1" in r.applied_rules
    other = await _recommender(FilteringStages(), rules).recommend(RecommendQuery(caller_id="adults"), None)
    assert not other.applied_filters and other.items[0][0] == "148"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (RecommendQuery(filters=[AttributeFilter.any_of("colour", ["red"])]),
         r'filters\[0\].attribute: unknown attribute "colour"; known: genres, year'),
        (RecommendQuery(filters=[AttributeFilter.any_of("genres", ["x"]), AttributeFilter.between("year", 5, 1)]),
         r"filters\[1\].range: min 5 is greater than max 1"),
        (RecommendQuery(filters=[AttributeFilter.between("genres", 1)]), r"filters\[0\].range: attribute"),
        (RecommendQuery(filters=[AttributeFilter.any_of("genres", [])]), r"filters\[0\].value_set.values"),
        (RecommendQuery(filters=[AttributeFilter.any_of("genres", ["x"] * 101)]), r"101 values, at most 100"),
        (RecommendQuery(filters=[AttributeFilter.any_of("genres", ["x"])] * 17), r"filters: 17 filters"),
        (RecommendQuery(diversity=DiversityRule("genres", 0)), r"diversity.max_items_per_value"),
        (RecommendQuery(caller_id="c" * 300), "caller_id"),
    ],
)
async def test_invalid_filters_name_the_field(query: RecommendQuery, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        await _recommender(FilteringStages()).recommend(query, None)


# --- property-based: through the whole pipeline, no answer breaks a filter or rule -----------------------------

_ids = st.sampled_from(list(CATALOG.items))
_filter = st.one_of(
    st.builds(AttributeFilter.any_of, st.just("genres"), st.lists(st.sampled_from([*GENRES, "Opera"]), min_size=1,
                                                                  max_size=3), exclude=st.booleans()),
    st.builds(AttributeFilter.all_of, st.just("genres"), st.lists(st.sampled_from(GENRES), min_size=1, max_size=2),
              exclude=st.booleans()),
    st.tuples(st.integers(1955, 2012), st.integers(0, 25), st.booleans())
    .map(lambda t: AttributeFilter.between("year", t[0], t[0] + t[1], exclude=t[2])),
)
_rules = st.builds(
    Rules, version=st.just("prop"),
    blocked_item_ids=st.frozensets(_ids, max_size=20),
    blocked=st.lists(_filter.map(lambda f: AttributeFilter(f.attribute, f.kind, f.values, f.match, f.min, f.max,
                                                           exclude=True)), max_size=1).map(tuple),
    pins=st.lists(st.tuples(_ids, st.integers(1, 10)), max_size=3, unique_by=(lambda p: p[0], lambda p: p[1]))
    .map(lambda ps: tuple(sorted((Pin(i, p) for i, p in ps), key=lambda p: p.position))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=_rules, filters=st.lists(_filter, max_size=3), leaky=st.booleans(),
       diversity=st.one_of(st.none(), st.builds(DiversityRule, st.sampled_from(["genres", "year"]), st.integers(1, 3))),
       candidates=st.one_of(st.just([]), st.lists(_ids, min_size=1, max_size=20, unique=True)),
       num_items=st.integers(1, 20), exclude=st.lists(_ids, max_size=5))
def test_no_returned_item_breaks_a_filter_or_rule(rules, filters, leaky, diversity, candidates, num_items, exclude):
    q = RecommendQuery(user_id="u1", filters=filters, diversity=diversity, candidate_item_ids=candidates,
                       num_items=num_items, exclude_item_ids=exclude)
    r = asyncio.run(_recommender(FilteringStages(leaky=leaky), rules).recommend(q, None))
    ids = [i for i, _, _ in r.items]
    policy = Policy.build(rules, filters=filters, diversity=diversity)
    assert len(ids) == len(set(ids)) <= num_items
    for item_id in ids:
        assert policy.check(item_id, CATALOG) is None  # request filters, blocked ids and values
        if not candidates:
            assert item_id not in {"1", "2", "3", *exclude}  # history and exclusions
        else:
            assert item_id in candidates
    if diversity is not None:
        assert not over_cap(ids, CATALOG, diversity)
    expected = min(num_items, len(candidates)) if candidates else num_items
    assert r.fewer_items == (len(ids) < expected)
    assert r.rules_version == "prop"


# --- the rules file watcher ---------------------------------------------------------------------------------


def _write(path: Path, rules: dict) -> None:
    path.write_text(json.dumps(rules))


def test_the_watcher_serves_a_changed_file_and_keeps_the_old_rules_when_it_breaks(tmp_path: Path, caplog) -> None:
    path = tmp_path / "rules.json"
    _write(path, {"version": "1", "blocked_item_ids": ["7"]})
    watcher = RulesWatcher(path, ATTRS, GatewaySettings().filter_limits(), poll_s=0)
    watcher.load()
    assert watcher().version == "1"
    assert REGISTRY.get_sample_value("instructrec_rules_info", {"service": "gateway", "version": "1"}) == 1
    assert not watcher.reload_if_changed()  # unchanged

    _write(path, {"version": "2", "blocked_item_ids": ["8"]})
    assert watcher.reload_if_changed() and watcher().blocked_item_ids == {"8"}
    assert REGISTRY.get_sample_value("instructrec_rules_info", {"service": "gateway", "version": "1"}) is None

    with caplog.at_level(logging.ERROR, logger="services.gateway.rules_watcher"):
        path.write_text('{"version": "3", "pinned": [{"item_id": "nope", "position": 1}]}')
        assert not watcher.reload_if_changed()
        assert not watcher.reload_if_changed()  # one log line per change, not per poll
    assert watcher().version == "2"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "rules file refused, version 2 keeps serving" in errors[0].getMessage()
    assert 'pinned[0].item_id: "nope" is not in the catalog' in errors[0].getMessage()

    path.unlink()
    assert not watcher.reload_if_changed() and watcher().version == "2"
    _write(path, {"version": 4})
    assert watcher.reload_if_changed() and watcher().version == "4"


def test_a_broken_rules_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text("{not json")
    with pytest.raises(RulesFormatError, match="not JSON"):
        RulesWatcher(path, ATTRS, GatewaySettings().filter_limits(), poll_s=0).load()


async def test_the_watcher_polls_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    _write(path, {"version": "a"})
    watcher = RulesWatcher(path, ATTRS, GatewaySettings().filter_limits(), poll_s=0.02)
    watcher.load()
    watcher.start()
    try:
        _write(path, {"version": "b"})
        for _ in range(200):
            if watcher().version == "b":
                break
            await asyncio.sleep(0.01)
        assert watcher().version == "b"
    finally:
        await watcher.close()


# --- through the servicer, on a real in-process server -------------------------------------------------------


class _App:
    name = "gateway-test"
    full_names = ("instructrec.v1.RecommendService",)

    def __init__(self, recommender: Recommender) -> None:
        self._recommender = recommender

    def add_to_server(self, server: grpc.aio.Server) -> None:
        servicer = RecommendServicer(self._recommender, None)  # Recommend only
        recommend_service_pb2_grpc.add_RecommendServiceServicer_to_server(servicer, server)

    async def start(self) -> None: ...

    async def is_ready(self) -> bool:
        return True

    async def close(self) -> None: ...


async def test_the_proto_fields_round_trip_and_bad_filters_are_invalid_argument() -> None:
    rules = Rules("v5", blocked_item_ids=frozenset({"9"}))
    runner = ServiceRunner(GatewaySettings(host="127.0.0.1", port=0, health_poll_interval_s=0.05),
                           _App(_recommender(FilteringStages(), rules)))
    port = await runner.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
            request = recommend_service_pb2.RecommendRequest(
                num_items=5, candidate_item_ids=["9", "12", "13", "14", "16"],
                filters=[common_pb2.AttributeFilter(attribute="year", range=common_pb2.NumericRange(min=1970)),
                         common_pb2.AttributeFilter(attribute="genres", exclude=True, value_set=common_pb2.ValueSet(
                             values=["Western"], match=common_pb2.VALUE_MATCH_ALL))],
                diversity=recommend_service_pb2.DiversityRule(attribute="genres", max_items_per_value=1))
            r = await stub.Recommend(request, timeout=10)
            assert r.rules_version == "v5"
            assert [f.description for f in r.applied_filters] == ["year in 1970..", "exclude genres all of [Western]"]
            assert r.applied_filters[0].filter.range.HasField("min") and not r.applied_filters[0].filter.range.HasField(
                "max")
            assert {x.item_id: x.reason for x in r.removed_items}["9"] == recommend_service_pb2.REMOVAL_REASON_BLOCKED
            assert r.fewer_items and "diversity: at most 1 items per genres value (request)" in r.applied_rules

            bad = recommend_service_pb2.RecommendRequest(filters=[
                common_pb2.AttributeFilter(attribute="genres", value_set=common_pb2.ValueSet(values=["Comedy"])),
                common_pb2.AttributeFilter(attribute="colour", value_set=common_pb2.ValueSet(values=["red"]))])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Recommend(bad, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == 'filters[1].attribute: unknown attribute "colour"; known: genres, year'
            no_condition = recommend_service_pb2.RecommendRequest(
                filters=[common_pb2.AttributeFilter(attribute="year")])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Recommend(no_condition, timeout=10)
            assert err.value.details() == "filters[0]: set value_set or range"
            # Values no valid client sends (what the fuzz test generates) are INVALID_ARGUMENT too, never INTERNAL.
            odd = [
                (common_pb2.AttributeFilter(attribute="year", range=common_pb2.NumericRange(min=float("nan"))),
                 "filters[0].range.min: must be a finite number, got nan"),
                (common_pb2.AttributeFilter(attribute="year", range=common_pb2.NumericRange(max=float("inf"))),
                 "filters[0].range.max: must be a finite number, got inf"),
                (common_pb2.AttributeFilter(attribute="genres", value_set=common_pb2.ValueSet(values=["x"], match=7)),
                 "filters[0].value_set.match: unknown value 7"),
                (common_pb2.AttributeFilter(attribute="\x00\n" + "a" * 300, value_set=common_pb2.ValueSet(
                    values=["x"])), "filters[0].attribute: 302 characters, at most 256"),
            ]
            for f, message in odd:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Recommend(recommend_service_pb2.RecommendRequest(filters=[f]), timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details() == message
    finally:
        await runner.stop()
