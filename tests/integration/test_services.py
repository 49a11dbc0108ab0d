"""The four services over real gRPC on loopback, against a real Triton serving tiny random models."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import grpc
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from instructrec.v1 import instruction_service_pb2, ranking_service_pb2, recommend_service_pb2, retrieval_service_pb2

from services.core.catalog import InteractionStore
from tests.integration.stack_helpers import running_stack

pytestmark = pytest.mark.triton


async def test_known_user_gets_ten_distinct_ranked_items_outside_their_history(gateway, dataset):
    history = set(InteractionStore.load(dataset / "train.csv").history("3"))
    r = await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id="3", query="a funny film"), timeout=60)
    ids = [i.item_id for i in r.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not history & set(ids)
    assert all(i.title.startswith("Film number") for i in r.items)
    scores = [i.score for i in r.items]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-5
    assert not r.degraded
    assert '"a funny film"' in r.instruction and "\nT. " in r.instruction
    assert {v.model_name for v in r.model_versions} == {"request_reader", "sequence_encoder", "text_encoder",
                                                        "ranker", "preference_generator"}
    assert r.template_id == "P2-I1-T3-0"
    assert [t.stage for t in r.stage_timings] == ["history", "reading", "retrieval", "instruction", "ranking"]


async def test_candidates_are_scored_by_retrieval_not_searched_and_reranked_in_label_order(gateway):
    candidates = ["5", "9", "13", "21"]
    r = await gateway.Recommend(
        recommend_service_pb2.RecommendRequest(user_id="2", candidate_item_ids=candidates), timeout=60
    )
    assert sorted(i.item_id for i in r.items) == sorted(candidates)
    # No query: the sequence model alone retrieves (the fitted no-query text weight is 0).
    assert {v.model_name for v in r.model_versions} == {"sequence_encoder", "ranker", "preference_generator"}
    assert "A. Film number 5" in r.instruction and "D. Film number 21" in r.instruction
    assert [t.stage for t in r.stage_timings] == ["history", "retrieval", "instruction", "ranking"] and not r.degraded


async def test_retrieval_scores_given_candidates_exactly_as_its_search_does(stack):
    async with stack.stub("retrieval") as stub:
        searched = await stub.RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(history_item_ids=["1", "2"], num_candidates=30), timeout=30
        )
        by_search = {c.item_id: c.score for c in searched.candidates}
        wanted = [c.item_id for c in searched.candidates][::7][:4]
        scored = await stub.RetrieveCandidates(
            retrieval_service_pb2.RetrieveCandidatesRequest(
                history_item_ids=["1", "2"], candidate_item_ids=wanted[::-1]
            ),
            timeout=30,
        )
        assert [c.item_id for c in scored.candidates] == wanted  # all of them, best first
        assert [c.score for c in scored.candidates] == pytest.approx([by_search[i] for i in wanted], abs=1e-5)
        assert scored.strategy in ("hybrid", "sequence")
        for bad, field in ((["1", "1"], "candidate_item_ids"), (["nope"], "candidate_item_ids")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.RetrieveCandidates(
                    retrieval_service_pb2.RetrieveCandidatesRequest(candidate_item_ids=bad), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()


async def test_ranking_fuses_retrieval_scores_and_rejects_misaligned_ones(stack):
    async with stack.stub("ranking") as stub:
        instruction = "Pick one.\nA. Film number 1\nB. Film number 2\nC. Film number 3"
        for best in range(3):
            scores = [5.0 if n == best else 0.0 for n in range(3)]  # 100 logits apart at temperature 0.05
            r = await stub.RankCandidates(ranking_service_pb2.RankCandidatesRequest(
                instruction=instruction, candidate_item_ids=["1", "2", "3"], retrieval_scores=scores), timeout=30)
            assert r.ranked_items[0].item_id == str(best + 1)
            assert sum(i.score for i in r.ranked_items) == pytest.approx(1.0, abs=1e-5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RankCandidates(ranking_service_pb2.RankCandidatesRequest(
                instruction=instruction, candidate_item_ids=["1", "2", "3"], retrieval_scores=[1.0]), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "retrieval_scores" in err.value.details()


async def test_anonymous_caller_with_own_history_and_exclusions(gateway):
    r = await gateway.Recommend(
        recommend_service_pb2.RecommendRequest(
            history_item_ids=["1", "2", "no-such-item"], exclude_item_ids=["3", "4"], num_items=5
        ),
        timeout=60,
    )
    ids = {i.item_id for i in r.items}
    assert len(ids) == 5 and not ids & {"1", "2", "3", "4"}
    assert list(r.unknown_history_item_ids) == ["no-such-item"]


async def test_nothing_known_gives_popular_items(gateway):
    r = await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id="stranger"), timeout=60)
    assert len(r.items) == 10 and r.template_id == "P0-I0-T3-0"


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"num_items": -3}, "num_items"),
        ({"num_items": 500}, "num_items"),
        ({"candidate_item_ids": ["1", "zzz"]}, "candidate_item_ids"),
        ({"candidate_item_ids": ["1", "1"]}, "candidate_item_ids"),
        ({"history_item_ids": [""]}, "history_item_ids"),
        ({"query": "q" * 5000}, "query"),
    ],
)
async def test_invalid_input_is_invalid_argument_naming_the_field(gateway, request_kwargs, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.Recommend(recommend_service_pb2.RecommendRequest(**request_kwargs), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


async def test_internal_services_validate_their_own_input(stack):
    async with stack.stub("ranking") as ranking:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ranking.RankCandidates(
                ranking_service_pb2.RankCandidatesRequest(instruction="x", candidate_item_ids=[]), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "candidate_item_ids" in err.value.details()
    async with stack.stub("instruction") as instruction:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await instruction.GenerateInstruction(
                instruction_service_pb2.GenerateInstructionRequest(history_item_ids=["nope"], candidate_item_ids=["1"]),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "history_item_ids" in err.value.details()


async def test_every_service_is_healthy_and_reflects_its_api(stack):
    for name, service in [
        ("gateway", "instructrec.v1.RecommendService"),
        ("instruction", "instructrec.v1.InstructionService"),
        ("retrieval", "instructrec.v1.RetrievalService"),
        ("ranking", "instructrec.v1.RankingService"),
    ]:
        async with grpc.aio.insecure_channel(stack.addr(name)) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service))
            assert health.status == health_pb2.HealthCheckResponse.SERVING, name
            live = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="liveness"))
            assert live.status == health_pb2.HealthCheckResponse.SERVING, name
            stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = [s.name async for r in stream for s in r.list_services_response.service]
            assert service in names and "grpc.health.v1.Health" in names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ranker_down_returns_retrieval_order_marked_degraded(triton_server, dataset, index_dir):
    # The ranking address points at a port nobody listens on: the ranking stage fails fast.
    async with running_stack(
        triton_server.grpc_addr, dataset, index_dir, ranking_addr=f"127.0.0.1:{_free_port()}", retry_max_attempts=1
    ) as s, s.stub("gateway") as gateway:
        r = await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id="4"), timeout=60)
    assert r.degraded and r.degraded_reasons and r.degraded_reasons[0].startswith("ranking skipped")
    assert len(r.items) == 10
    scores = [i.score for i in r.items]
    assert scores == sorted(scores, reverse=True)  # retrieval similarity order
    assert "ranker" not in {v.model_name for v in r.model_versions}


async def test_concurrent_requests_are_batched_by_triton(gateway, triton_server):
    client = triton_grpc.InferenceServerClient(triton_server.grpc_addr)

    def executions_over_one(model: str) -> int:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return sum(int(b.get("compute_infer", {}).get("count", 0))
                   for b in stats.get("batch_stats", []) if int(b["batch_size"]) > 1)

    before = {m: executions_over_one(m) for m in ("ranker", "text_encoder")}
    users = [str(u) for u in range(1, 13)] * 3
    responses = await asyncio.gather(*(
        gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id=u, query=f"request {n}"), timeout=120)
        for n, u in enumerate(users)
    ))
    assert all(len(r.items) == 10 and not r.degraded for r in responses)
    after = {m: executions_over_one(m) for m in ("ranker", "text_encoder")}
    assert after["ranker"] > before["ranker"]
    assert after["text_encoder"] > before["text_encoder"]


async def test_metrics_endpoint_counts_rpcs_by_code(gateway, stack):
    await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id="5"), timeout=60)
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.Recommend(recommend_service_pb2.RecommendRequest(num_items=-1), timeout=10)
    url = f"http://127.0.0.1:{stack.runners['gateway'].metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'instructrec_rpc_requests_total{code="OK",method="Recommend",service="gateway"}' in text
    assert 'instructrec_rpc_requests_total{code="INVALID_ARGUMENT",method="Recommend",service="gateway"}' in text
    assert 'instructrec_rpc_latency_seconds_bucket{le="0.001",method="Recommend",service="gateway"}' in text


async def _health(addr: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(addr) as ch:
        return (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service))).status


async def _wait_health(addr: str, status: int, timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if await _health(addr) == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{addr} did not reach health status {status}")


async def test_ranker_unloaded_in_triton_turns_ranking_not_serving_and_answers_degraded(
    gateway, stack, triton_server
):
    client = triton_grpc.InferenceServerClient(triton_server.grpc_addr)
    client.unload_model("ranker")
    try:
        await _wait_health(stack.addr("ranking"), health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await _health(stack.addr("ranking"), "liveness") == health_pb2.HealthCheckResponse.SERVING
        assert await _health(stack.addr("gateway")) == health_pb2.HealthCheckResponse.SERVING
        r = await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id="6"), timeout=60)
        assert r.degraded and "ranker" in r.degraded_reasons[0] and len(r.items) == 10
    finally:
        client.load_model("ranker")
    await _wait_health(stack.addr("ranking"), health_pb2.HealthCheckResponse.SERVING)
    r = await gateway.Recommend(recommend_service_pb2.RecommendRequest(user_id="6"), timeout=60)
    assert not r.degraded
