"""Request bodies that are not valid requests, on every RPC of the real services (tiny models on a real Triton).

Random bytes and valid messages of another type: INVALID_ARGUMENT saying the body is not a valid request of
the RPC's type, counted in ``instructrec_rpc_requests_total``, one log line without a traceback; never
UNKNOWN or INTERNAL; every service still SERVING afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import random

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from instructrec.v1 import (
    instruction_service_pb2,
    ranking_service_pb2,
    recommend_service_pb2,
    retrieval_service_pb2,
)
from prometheus_client import REGISTRY

from services.common.server import MalformedRequest, tolerant_deserializer

pytestmark = pytest.mark.triton

# (service, full method, request type, a valid message of another type that has fields the request type
# does not declare). The last is what a client with the wrong protos, or calling the wrong method, sends.
RPCS = [
    ("gateway", "/instructrec.v1.RecommendService/Recommend", recommend_service_pb2.RecommendRequest,
     instruction_service_pb2.GenerateInstructionResponse(instruction="x", preference_source=2,
                                                         preference_cached=True)),
    ("instruction", "/instructrec.v1.InstructionService/GenerateInstruction",
     instruction_service_pb2.GenerateInstructionRequest,
     retrieval_service_pb2.RetrieveCandidatesRequest(history_item_ids=["1"], num_candidates=5,
                                                     candidate_item_ids=["2"])),
    ("retrieval", "/instructrec.v1.RetrievalService/RetrieveCandidates",
     retrieval_service_pb2.RetrieveCandidatesRequest,
     recommend_service_pb2.RecommendRequest(user_id="1", candidate_item_ids=["2", "3"])),
    ("ranking", "/instructrec.v1.RankingService/RankCandidates", ranking_service_pb2.RankCandidatesRequest,
     recommend_service_pb2.RecommendRequest(query="a comedy", num_items=3, candidate_item_ids=["2"])),
]
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def _invalid_count(service: str, method: str) -> float:
    labels = {"service": service, "method": method, "code": "INVALID_ARGUMENT"}
    return REGISTRY.get_sample_value("instructrec_rpc_requests_total", labels) or 0.0


async def _send(channel: grpc.aio.Channel, method: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    try:
        await channel.unary_unary(method)(body, timeout=30)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def _all_serving(stack) -> bool:
    for name in ("gateway", "instruction", "retrieval", "ranking"):
        async with grpc.aio.insecure_channel(stack.addr(name)) as ch:
            status = (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                return False
    return True


@pytest.mark.parametrize(("service", "method", "request_type", "other"), RPCS, ids=[r[0] for r in RPCS])
async def test_random_bytes_and_other_messages_get_invalid_argument_counted_and_logged_briefly(
    stack, caplog: pytest.LogCaptureFixture, service, method, request_type, other
):
    type_name = request_type.DESCRIPTOR.full_name
    parse = tolerant_deserializer(request_type.FromString, reject_unknown_fields=True)
    other_body = other.SerializeToString()
    assert isinstance(parse(other_body), MalformedRequest)  # the case is what it claims to be
    rng = random.Random(f"malformed-{service}")
    bodies = [other_body] + [rng.randbytes(rng.randint(1, 96)) for _ in range(200)]
    rpc_name = method.rsplit("/", 1)[-1]
    before = _invalid_count(service, rpc_name)
    malformed = invalid = 0
    async with grpc.aio.insecure_channel(stack.addr(service)) as channel:
        with caplog.at_level(logging.INFO):
            for body in bodies:
                code, details = await _send(channel, method, body)
                assert code not in FORBIDDEN, (code, details, body)
                invalid += code == grpc.StatusCode.INVALID_ARGUMENT
                if isinstance(parse(body), MalformedRequest):
                    malformed += 1
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, body)
                    assert details.startswith(f"request body is not a valid {type_name}: "), details
    print(f"\n{rpc_name}: {len(bodies)} bodies, {malformed} not a valid {type_name}, "
          f"{invalid} INVALID_ARGUMENT in all")
    assert malformed > 150  # most random bytes are not a valid message (the rest are served as requests)
    # Every refusal is counted (the count is taken just after the status is sent: wait for the last one).
    for _ in range(100):
        if _invalid_count(service, rpc_name) - before >= invalid:
            break
        await asyncio.sleep(0.01)
    assert _invalid_count(service, rpc_name) - before == invalid
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]  # no tracebacks
    parse_lines = [r for r in caplog.records if "request body is not a valid" in str(getattr(r, "error", ""))]
    assert len(parse_lines) == malformed  # one line per refused body
    assert await _all_serving(stack)
