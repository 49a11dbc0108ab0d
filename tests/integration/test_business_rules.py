"""Filters and business rules through the real services on loopback, against a real Triton (tiny models):
a narrow filter still fills num_items from the real indexes, bad filters are INVALID_ARGUMENT, and the rules
file is rewritten (and broken) under load with no failed request."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path

import grpc
import pytest
from instructrec.v1 import (
    common_pb2,
    recommend_service_pb2,
    recommend_service_pb2_grpc,
    retrieval_service_pb2,
    retrieval_service_pb2_grpc,
)

from services.core.catalog import Catalog, InteractionStore
from services.core.filters import AttributeFilter, CatalogAttributes
from tests.integration.stack_helpers import running_stack

pytestmark = pytest.mark.triton


def _values(attribute: str, values: list[str], *, exclude: bool = False) -> common_pb2.AttributeFilter:
    return common_pb2.AttributeFilter(attribute=attribute, exclude=exclude,
                                      value_set=common_pb2.ValueSet(values=values))


def _narrow(catalog: Catalog, history: set[str], low: int, high: int) -> tuple[str, int, int, set[str]]:
    """A genre and a year range that together allow between ``low`` and ``high`` items outside ``history``."""
    attrs = CatalogAttributes(catalog)
    for genre in attrs.values_of("genres"):
        for start in range(1960, 2020):
            for width in (5, 10, 15, 20, 30):
                allowed = attrs.eligible([AttributeFilter.any_of("genres", [genre]),
                                          AttributeFilter.between("year", start, start + width)]) - history
                if low <= len(allowed) <= high:
                    return genre, start, start + width, set(allowed)
    raise AssertionError("the synthetic catalog has no narrow filter of that size")


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.json"
    path.write_text(json.dumps({"version": "v0"}))
    return path


@pytest.fixture(scope="module")
async def rules_stack(triton_server, dataset, index_dir, rules_file):
    # Each retrieval source fetches only 5 candidates: unfiltered, a narrow filter would find almost none.
    async with running_stack(triton_server.grpc_addr, dataset, index_dir,
                             service_overrides={"retrieval": {"source_candidates": 5}},
                             rules_path=rules_file, rules_poll_s=0.1) as s:
        yield s


async def test_a_narrow_filter_still_returns_num_items_through_the_real_indexes(rules_stack, dataset):
    catalog = Catalog.load(dataset / "items.jsonl")
    history = set(InteractionStore.load(dataset / "train.csv").history("3"))
    genre, lo, hi, allowed = _narrow(catalog, history, 10, 14)
    filters = [_values("genres", [genre]), common_pb2.AttributeFilter(
        attribute="year", range=common_pb2.NumericRange(min=lo, max=hi))]
    async with grpc.aio.insecure_channel(rules_stack.addr("gateway")) as ch:
        r = await recommend_service_pb2_grpc.RecommendServiceStub(ch).Recommend(
            recommend_service_pb2.RecommendRequest(user_id="3", query="a film", num_items=10, filters=filters),
            timeout=60)
    ids = {i.item_id for i in r.items}
    assert len(ids) == 10 and ids <= allowed and not r.fewer_items and not r.degraded
    assert [f.description for f in r.applied_filters] == [f"genres any of [{genre}]", f"year in {lo}..{hi}"]
    assert r.rules_version == "v0"

    # Retrieval itself finds every allowed item (the filter is applied inside its search, not after it).
    async with grpc.aio.insecure_channel(rules_stack.addr("retrieval")) as ch:
        got = await retrieval_service_pb2_grpc.RetrievalServiceStub(ch).RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(history_item_ids=sorted(history), num_candidates=50,
                                                            filters=filters), timeout=30)
    assert {c.item_id for c in got.candidates} == allowed


async def test_too_few_matching_items_and_none_are_answers_not_errors(rules_stack, dataset):
    catalog = Catalog.load(dataset / "items.jsonl")
    history = set(InteractionStore.load(dataset / "train.csv").history("4"))
    genre, lo, hi, allowed = _narrow(catalog, history, 2, 6)
    async with grpc.aio.insecure_channel(rules_stack.addr("gateway")) as ch:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
        few = await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id="4", num_items=10, filters=[
            _values("genres", [genre]),
            common_pb2.AttributeFilter(attribute="year", range=common_pb2.NumericRange(min=lo, max=hi))]), timeout=60)
        assert {i.item_id for i in few.items} == allowed and few.fewer_items
        none = await stub.Recommend(recommend_service_pb2.RecommendRequest(
            user_id="4", filters=[_values("genres", ["Opera"])]), timeout=60)
        assert list(none.items) == [] and none.fewer_items and not none.degraded


async def test_invalid_filters_are_invalid_argument_naming_the_field(rules_stack):
    bad = [
        ([_values("genres", ["Comedy"]), _values("colour", ["red"])],
         'filters[1].attribute: unknown attribute "colour"; known: genres, year'),
        ([common_pb2.AttributeFilter(attribute="year", range=common_pb2.NumericRange(min=2000, max=1990))],
         "filters[0].range: min 2000 is greater than max 1990 (an empty range)"),
        ([common_pb2.AttributeFilter(attribute="genres", range=common_pb2.NumericRange(min=1))],
         'filters[0].range: attribute "genres" is not numeric'),
        ([_values("genres", [])], "filters[0].value_set.values: must not be empty"),
        ([_values("genres", [str(i) for i in range(101)])], "filters[0].value_set.values: 101 values, at most 100"),
    ]
    for service, call in (
        ("gateway", lambda ch, f: recommend_service_pb2_grpc.RecommendServiceStub(ch).Recommend(
            recommend_service_pb2.RecommendRequest(user_id="3", filters=f), timeout=30)),
        ("retrieval", lambda ch, f: retrieval_service_pb2_grpc.RetrievalServiceStub(ch).RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(filters=f), timeout=30)),
    ):
        async with grpc.aio.insecure_channel(rules_stack.addr(service)) as ch:
            for filters, message in bad:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(ch, filters)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, service
                assert err.value.details().startswith(message), (service, err.value.details())


async def test_rules_file_rewritten_under_load_fails_no_request_and_a_broken_file_keeps_the_old_rules(
        rules_stack, rules_file, dataset):
    catalog = Catalog.load(dataset / "items.jsonl")
    genres = CatalogAttributes(catalog).values_of("genres")
    # Each version blocks another genre and pins another item; the answer must follow the version it reports.
    versions = {f"v{n}": {"version": f"v{n}", "blocked_attributes": [
        {"attribute": "genres", "value_set": {"values": [genres[n % len(genres)]]}}],
        "pinned": [{"item_id": str(n * 7), "position": 1}]} for n in range(1, 7)}

    def write(text: str, atomic: bool) -> None:
        if atomic:
            tmp = rules_file.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, rules_file)
        else:
            rules_file.write_text(text)

    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    violations: list[str] = []

    async def caller(worker: int) -> None:
        async with grpc.aio.insecure_channel(rules_stack.addr("gateway")) as ch:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = await stub.Recommend(recommend_service_pb2.RecommendRequest(
                        user_id=str(1 + (worker + n) % 12), num_items=5), timeout=60)
                except grpc.aio.AioRpcError as err:
                    outcomes[err.code().name] += 1
                    continue
                outcomes["OK"] += 1
                seen[r.rules_version] += 1
                rules = versions.get(r.rules_version)
                if rules is None:
                    continue  # v0, before the first rewrite was picked up
                blocked = rules["blocked_attributes"][0]["value_set"]["values"][0]
                if any(blocked in catalog[i.item_id].genres for i in r.items):
                    violations.append(f"{r.rules_version}: a {blocked} item was returned")

    workers = [asyncio.create_task(caller(w)) for w in range(4)]
    try:
        for n, rules in enumerate(versions.values()):
            text = json.dumps(rules)
            write(text, atomic=n % 2 == 0)
            await asyncio.sleep(0.6)
            if n == 2:
                write(text[: len(text) // 2], atomic=False)  # half-written: refused, v3 keeps serving
                await asyncio.sleep(0.4)
        last = "v6"
        write('{"version": "v7", "pinned": [{"item_id": "no such item", "position": 1}]}', atomic=True)
        await asyncio.sleep(0.6)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert outcomes["OK"] > 0 and set(outcomes) == {"OK"}, outcomes
    assert not violations, violations[:5]
    assert len(set(seen) & set(versions)) >= 3, seen  # the reloads were seen by requests in flight
    async with grpc.aio.insecure_channel(rules_stack.addr("gateway")) as ch:
        r = await recommend_service_pb2_grpc.RecommendServiceStub(ch).Recommend(
            recommend_service_pb2.RecommendRequest(user_id="5"), timeout=60)
    assert r.rules_version == last  # the broken v7 was refused
    assert "v7" not in seen
