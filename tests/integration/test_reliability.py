"""Bad input, deadlines, overload and security against the real services (tiny models on a real Triton).

Thousands of generated requests go through the real gRPC stack; none may end in INTERNAL or UNKNOWN, and
every service must still be healthy afterwards.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from instructrec.v1 import (
    instruction_service_pb2,
    ranking_service_pb2,
    recommend_service_pb2,
    recommend_service_pb2_grpc,
    retrieval_service_pb2,
)

from tests.integration.certs import make_certs
from tests.integration.stack_helpers import STUBS, running_stack

pytestmark = pytest.mark.triton

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
HYPOTHESIS = settings(
    max_examples=1000, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

known_ids = st.integers(1, 80).map(str)
any_ids = st.one_of(known_ids, st.text(max_size=300), st.just(""), st.just("x" * 1000))
# Half the lists hold only catalog ids, so that valid requests get deep into the pipeline too.
id_lists = st.one_of(st.lists(known_ids, max_size=30), st.lists(any_ids, max_size=40))
candidate_lists = st.one_of(st.lists(known_ids, min_size=1, max_size=20, unique=True), id_lists)
texts = st.one_of(st.text(max_size=200), st.text(min_size=900, max_size=1100), st.just("\x00\x01\x1b[31m\u202e"))
int32 = st.integers(-(2**31), 2**31 - 1)


def _call(method, request, timeout: float = 30.0) -> grpc.StatusCode:
    try:
        method(request, timeout=timeout)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _counts(seen: dict[grpc.StatusCode, int]) -> str:
    return ", ".join(f"{code.name} {n}" for code, n in sorted(seen.items(), key=lambda kv: -kv[1]))


async def _all_serving(stack) -> bool:
    for name in ("gateway", "instruction", "retrieval", "ranking"):
        async with grpc.aio.insecure_channel(stack.addr(name)) as ch:
            status = (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                return False
    return True


async def _fuzz(stack, service: str, method_name: str, strategy) -> dict[grpc.StatusCode, int]:
    """Run a hypothesis search against ``service`` in a thread (the servers live on this event loop) and count
    status codes."""
    seen: dict[grpc.StatusCode, int] = {}

    def run() -> None:
        with grpc.insecure_channel(stack.addr(service)) as channel:
            method = getattr(STUBS[service](channel), method_name)

            @HYPOTHESIS
            @given(strategy)
            def check(request) -> None:
                code = _call(method, request)
                seen[code] = seen.get(code, 0) + 1
                assert code not in FORBIDDEN, f"{code} for {request!r:.500}"

            check()

    await asyncio.to_thread(run)
    return seen


async def test_generated_recommend_requests_never_fail_internally(stack):
    requests = st.builds(
        recommend_service_pb2.RecommendRequest,
        user_id=st.one_of(known_ids, st.text(max_size=300)),
        history_item_ids=id_lists,
        query=texts,
        num_items=st.one_of(st.integers(0, 20), st.integers(-3, 25), int32),
        exclude_item_ids=id_lists,
        candidate_item_ids=st.one_of(st.just([]), candidate_lists),
    )
    seen = await _fuzz(stack, "gateway", "Recommend", requests)
    print(f"\nRecommend: {_counts(seen)}")
    assert seen.get(grpc.StatusCode.OK, 0) > 200 and seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 200, seen
    assert await _all_serving(stack)


async def test_generated_internal_requests_never_fail_internally(stack):
    cases = [
        ("instruction", "GenerateInstruction",
         st.builds(instruction_service_pb2.GenerateInstructionRequest, history_item_ids=id_lists, query=texts,
                   candidate_item_ids=candidate_lists)),
        ("retrieval", "RetrieveCandidates",
         st.builds(retrieval_service_pb2.RetrieveCandidatesRequest, history_item_ids=id_lists, query=texts,
                   exclude_item_ids=id_lists,
                   num_candidates=st.one_of(st.integers(0, 100), st.integers(-3, 1001), int32),
                   candidate_item_ids=st.one_of(st.just([]), candidate_lists))),
        ("ranking", "RankCandidates",
         st.builds(ranking_service_pb2.RankCandidatesRequest, instruction=texts,
                   candidate_item_ids=candidate_lists,
                   retrieval_scores=st.one_of(st.just([]), st.lists(st.floats(width=32), max_size=22)))),
    ]
    for name, method, strategy in cases:
        seen = await _fuzz(stack, name, method, strategy)
        print(f"\n{method}: {_counts(seen)}")
        assert seen.get(grpc.StatusCode.OK, 0) > 100 and seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 100, seen
    assert await _all_serving(stack)


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"history_item_ids": [str(i % 80 + 1) for i in range(10_001)]}, "history_item_ids"),
        ({"exclude_item_ids": ["x"] * 10_001}, "exclude_item_ids"),
        ({"query": "a" * 1_001}, "query"),
        ({"user_id": "u" * 257}, "user_id"),
        ({"candidate_item_ids": [str(i) for i in range(1, 22)]}, "candidate_item_ids"),
    ],
)
async def test_limits_name_the_field(gateway, request_kwargs, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.Recommend(recommend_service_pb2.RecommendRequest(**request_kwargs), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()


async def test_oversized_message_is_refused_by_grpc_not_by_a_crash(gateway):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.Recommend(recommend_service_pb2.RecommendRequest(query="q" * 5_000_000), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_short_deadline_returns_promptly_as_deadline_exceeded_or_degraded(gateway):
    # A history nobody asked for yet: its preference statement is not cached, so the full path is slow.
    outcomes = []
    for n in range(5):
        history = [str((n * 7 + k) % 80 + 1) for k in range(6)]
        start = time.perf_counter()
        try:
            r = await gateway.Recommend(recommend_service_pb2.RecommendRequest(history_item_ids=history), timeout=0.05)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            outcome = "DEADLINE_EXCEEDED"
        else:
            assert r.degraded or r.template_id  # answered within the deadline, possibly without ranking
            outcome = "degraded" if r.degraded else "OK"
        elapsed = time.perf_counter() - start
        outcomes.append(f"{outcome} in {elapsed * 1000:.0f} ms")
        assert elapsed < 1.0  # bounded by the deadline, never hanging
    print("\n50 ms deadline: " + "; ".join(outcomes))


async def test_overload_is_refused_at_once_with_resource_exhausted(triton_server, dataset, index_dir):
    async with running_stack(
        triton_server.grpc_addr, dataset, index_dir, service_overrides={"gateway": {"max_concurrent_rpcs": 2}}
    ) as s, s.stub("gateway") as stub:

        async def one(n: int):
            history = [str((n * 3 + k) % 80 + 1) for k in range(5)]
            try:
                await stub.Recommend(recommend_service_pb2.RecommendRequest(history_item_ids=history), timeout=60)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(one(n) for n in range(24)))
    print(f"\n24 concurrent, max_concurrent_rpcs=2: OK {codes.count(grpc.StatusCode.OK)}, "
          f"RESOURCE_EXHAUSTED {codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)}")
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) > 0 and codes.count(grpc.StatusCode.OK) >= 2


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


async def test_mutual_tls_on_every_hop_and_bearer_tokens_on_the_gateway(triton_server, dataset, index_dir, certs):
    server_tls = {"enabled": True, "cert_path": certs.server_cert, "key_path": certs.server_key,
                  "client_ca_path": certs.ca}
    client_tls = {"enabled": True, "ca_path": certs.ca, "cert_path": certs.client_cert, "key_path": certs.client_key}
    overrides = {name: {"tls": server_tls} for name in ("ranking", "retrieval", "instruction")}
    overrides["gateway"] = {"tls": server_tls, "client_tls": client_tls, "auth_tokens": ["s3cret", "other"],
                            "health_port": 0}
    async with running_stack(triton_server.grpc_addr, dataset, index_dir, service_overrides=overrides) as s:
        addr = s.addr("gateway")
        creds = grpc.ssl_channel_credentials(
            certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
        )
        request = recommend_service_pb2.RecommendRequest(user_id="3")
        async with grpc.aio.secure_channel(addr, creds) as ch:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
            r = await stub.Recommend(request, metadata=[("authorization", "Bearer s3cret")], timeout=60)
            assert len(r.items) == 10 and not r.degraded  # every internal hop worked over mutual TLS
            for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "s3cret")]):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Recommend(request, metadata=metadata, timeout=10)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
        # Probes that cannot speak TLS use the plaintext health-only port; it serves no API.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{s.runners['gateway'].health_port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await recommend_service_pb2_grpc.RecommendServiceStub(ch).Recommend(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # No client certificate, a server we do not trust, or plaintext: the connection itself is refused.
        bad_channels = [
            grpc.aio.secure_channel(addr, grpc.ssl_channel_credentials(certs.ca.read_bytes())),
            grpc.aio.secure_channel(addr, grpc.ssl_channel_credentials(
                certs.other_ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes())),
            grpc.aio.insecure_channel(addr),
        ]
        for ch in bad_channels:
            async with ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await recommend_service_pb2_grpc.RecommendServiceStub(ch).Recommend(
                        request, metadata=[("authorization", "Bearer s3cret")], timeout=5
                    )
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE

