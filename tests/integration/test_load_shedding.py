"""Past capacity the gateway refuses at once (RESOURCE_EXHAUSTED) instead of queueing callers to their deadline."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from tests.integration.stack_helpers import running_stack

pytestmark = pytest.mark.triton


async def test_a_burst_past_capacity_is_answered_or_shed_fast_never_at_the_deadline(triton_server, dataset, index_dir):
    gateway = {"admission_max_inflight": 1, "admission_max_waiting": 4, "admission_max_queue_wait_s": 0.5}
    async with running_stack(triton_server.grpc_addr, dataset, index_dir, {"gateway": gateway}) as stack, \
            grpc.aio.insecure_channel(stack.addr("gateway")) as channel:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)
        await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id="2"), timeout=60)  # warm

        async def call(user: int) -> tuple[grpc.StatusCode, float]:
            t0 = time.perf_counter()
            try:
                await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id=str(user % 12 + 1)), timeout=20)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                code = err.code()
            return code, time.perf_counter() - t0

        results = await asyncio.gather(*(call(u) for u in range(40)))
    codes = [c for c, _ in results]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.count(grpc.StatusCode.OK) >= 1 and codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
    # Nobody waited for their 20 s deadline: an admitted call waits at most ~the queue limit, a shed one not at all.
    assert max(t for _, t in results) < 10.0
    shed = [t for c, t in results if c == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert sorted(shed)[len(shed) // 2] < 1.0
