"""Request bytes that are not a valid request, through a real in-process grpc.aio server on port 0.

grpc's generated deserializer raises before any interceptor runs; ``RequestParsingInterceptor`` turns that
(and, on our own services, fields the request type does not declare) into INVALID_ARGUMENT, counted and
logged in one line like any other bad request. A stand-in RecommendService echoes what it parsed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from instructrec.v1 import (
    instruction_service_pb2,
    ranking_service_pb2,
    recommend_service_pb2,
    recommend_service_pb2_grpc,
)
from prometheus_client import REGISTRY

from services.common.server import MalformedRequest, ServiceRunner, tolerant_deserializer
from services.common.settings import ServiceSettings

RECOMMEND = "/instructrec.v1.RecommendService/Recommend"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# Field 1 (user_id, a string) sent as a varint, then a length that runs past the end: does not parse.
GARBAGE = b"\x0a\xff\xff\xff\x0f\x01"


class _EchoRecommender(recommend_service_pb2_grpc.RecommendServiceServicer):
    """Answers with what it parsed: the request's query as the instruction."""

    def __init__(self) -> None:
        self.requests: list[recommend_service_pb2.RecommendRequest] = []

    async def Recommend(self, request, context):
        self.requests.append(request)
        return recommend_service_pb2.RecommendResponse(instruction=request.query, template_id=request.user_id)


class _App:
    name = "echo"
    full_names = ("instructrec.v1.RecommendService",)

    def __init__(self) -> None:
        self.servicer = _EchoRecommender()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        recommend_service_pb2_grpc.add_RecommendServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None: ...

    async def is_ready(self) -> bool:
        return True

    async def close(self) -> None: ...


async def _running(**overrides) -> tuple[_App, ServiceRunner, grpc.aio.Channel]:
    app = _App()
    runner = ServiceRunner(ServiceSettings(host="127.0.0.1", port=0, health_poll_interval_s=0.05, **overrides), app)
    port = await runner.start()
    return app, runner, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def echo() -> AsyncIterator[tuple[_App, grpc.aio.Channel]]:
    app, runner, channel = await _running()
    try:
        yield app, channel
    finally:
        await channel.close()
        await runner.stop()


async def _raw(channel: grpc.aio.Channel, method: str, body: bytes, **kwargs) -> bytes:
    """Send ``body`` as the request bytes, whatever they are."""
    return await channel.unary_unary(method)(body, timeout=5, **kwargs)


async def _code(channel: grpc.aio.Channel, method: str, body: bytes, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        await _raw(channel, method, body, **kwargs)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def _count(code: str, method: str = "Recommend") -> float:
    labels = {"service": "echo", "method": method, "code": code}
    return REGISTRY.get_sample_value("instructrec_rpc_requests_total", labels) or 0.0


# ---------------------------------------------------------------- the deserializer alone


def test_tolerant_deserializer_returns_a_sentinel_naming_the_type_instead_of_raising() -> None:
    with pytest.raises(DecodeError):
        recommend_service_pb2.RecommendRequest.FromString(GARBAGE)
    parse = tolerant_deserializer(recommend_service_pb2.RecommendRequest.FromString, reject_unknown_fields=True)
    bad = parse(GARBAGE)
    assert isinstance(bad, MalformedRequest)
    assert bad.reason.startswith("request body is not a valid instructrec.v1.RecommendRequest: ")
    good = parse(recommend_service_pb2.RecommendRequest(query="funny").SerializeToString())
    assert good == recommend_service_pb2.RecommendRequest(query="funny")
    assert tolerant_deserializer(None, reject_unknown_fields=True) is None  # raw-bytes methods stay raw


def test_unknown_fields_are_refused_only_when_asked() -> None:
    # A RecommendResponse's applied_rules is field 12, which RecommendRequest does not have.
    body = recommend_service_pb2.RecommendResponse(applied_rules=["pinned 1 at position 1"]).SerializeToString()
    strict = tolerant_deserializer(recommend_service_pb2.RecommendRequest.FromString, reject_unknown_fields=True)
    lenient = tolerant_deserializer(recommend_service_pb2.RecommendRequest.FromString, reject_unknown_fields=False)
    assert isinstance(strict(body), MalformedRequest) and "field number(s) 12" in strict(body).reason
    assert lenient(body).ListFields() == []  # parsed, the unknown field kept aside
    # A field the type declares, with another wire type (num_items as a string), is unknown to it too.
    mistyped = b"\x22\x01x"  # field 4, length-delimited
    assert isinstance(strict(mistyped), MalformedRequest) and "field number(s) 4" in strict(mistyped).reason


def _len_field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_unknown_fields_inside_nested_messages_and_map_values_are_found() -> None:
    stray = b"\x78\x01"  # field 15, varint
    # RecommendResponse.items[0] (a RecommendedItem) carries the stray field.
    item = recommend_service_pb2.RecommendedItem(item_id="1").SerializeToString() + stray
    parse = tolerant_deserializer(recommend_service_pb2.RecommendResponse.FromString, reject_unknown_fields=True)
    assert "field number(s) 15" in parse(_len_field(1, item)).reason
    # Struct.fields is map<string, Value>: the stray field sits in a map value.
    value = struct_pb2.Value(string_value="x").SerializeToString() + stray
    entry = _len_field(1, b"a") + _len_field(2, value)
    parse = tolerant_deserializer(struct_pb2.Struct.FromString, reject_unknown_fields=True)
    assert "field number(s) 15" in parse(_len_field(1, entry)).reason
    clean = struct_pb2.Struct(fields={"a": struct_pb2.Value(string_value="x")})
    assert parse(clean.SerializeToString()) == clean


# ---------------------------------------------------------------- through the server


async def test_bytes_that_do_not_parse_are_invalid_argument_counted_and_logged_in_one_line(
    echo, caplog: pytest.LogCaptureFixture
) -> None:
    app, channel = echo
    before = _count("INVALID_ARGUMENT")
    with caplog.at_level(logging.INFO, logger="services.common.server"):
        code, details = await _code(channel, RECOMMEND, GARBAGE)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "request body is not a valid instructrec.v1.RecommendRequest: the bytes do not parse as one"
    assert _count("INVALID_ARGUMENT") == before + 1
    records = [r for r in caplog.records if r.name == "services.common.server"]
    assert [r.getMessage() for r in records] == ["rpc failed"]
    assert records[0].exc_info is None and records[0].levelno == logging.INFO
    assert not app.servicer.requests  # the servicer never saw it


async def test_a_message_of_another_type_with_undeclared_fields_is_invalid_argument(echo) -> None:
    app, channel = echo
    other = instruction_service_pb2.GenerateInstructionResponse(
        instruction="x", template_id="P0-I0-T3-0", preference_source=2, preference_cached=True
    )
    code, details = await _code(channel, RECOMMEND, other.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "instructrec.v1.RecommendRequest" in details and "field number(s) 3, 5" in details
    assert not app.servicer.requests


async def test_a_message_of_another_type_that_is_structurally_a_valid_request_is_served_as_one(echo) -> None:
    # Protobuf carries no type on the wire: RankCandidatesRequest's fields 1 and 2 are strings like
    # RecommendRequest's, so this parses as user_id + history. Nothing at the server can tell them apart.
    app, channel = echo
    other = ranking_service_pb2.RankCandidatesRequest(instruction="u1", candidate_item_ids=["3"])
    response = recommend_service_pb2.RecommendResponse.FromString(await _raw(channel, RECOMMEND,
                                                                             other.SerializeToString()))
    assert response.template_id == "u1" and list(app.servicer.requests[0].history_item_ids) == ["3"]


async def test_random_bytes_are_answered_ok_or_invalid_argument_never_unknown(echo) -> None:
    app, channel = echo
    rng = random.Random(18)
    seen: dict[grpc.StatusCode, int] = {}
    for _ in range(300):
        body = rng.randbytes(rng.randint(0, 64))
        code, details = await _code(channel, RECOMMEND, body)
        seen[code] = seen.get(code, 0) + 1
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, body)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert details.startswith("request body is not a valid instructrec.v1.RecommendRequest: ")
    assert seen[grpc.StatusCode.INVALID_ARGUMENT] > 250, seen


async def test_a_valid_request_still_works(echo) -> None:
    _, channel = echo
    stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)
    response = await stub.Recommend(recommend_service_pb2.RecommendRequest(query="a comedy"), timeout=5)
    assert response.instruction == "a comedy"


async def test_health_check_watch_and_reflection_answer_garbage_with_invalid_argument_and_keep_working(echo) -> None:
    _, channel = echo
    code, details = await _code(channel, HEALTH_CHECK, GARBAGE)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "grpc.health.v1.HealthCheckRequest" in details

    watch = channel.unary_stream("/grpc.health.v1.Health/Watch")(GARBAGE, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in watch:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    info = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(timeout=5)
    await info.write(GARBAGE)
    await info.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in info:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.reflection.v1alpha.ServerReflectionRequest" in err.value.details()

    # Standard services stay lenient about fields they do not know (newer standard clients keep working).
    serving = health_pb2.HealthCheckResponse.SERVING
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == serving
    with_unknown = health_pb2.HealthCheckRequest(service="").SerializeToString() + b"\x10\x01"
    assert health_pb2.HealthCheckResponse.FromString(await _raw(channel, HEALTH_CHECK, with_unknown)).status == serving
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
    assert (await watch.read()).status == serving
    watch.cancel()
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for r in [r async for r in call] for s in r.list_services_response.service}
    assert "instructrec.v1.RecommendService" in names


async def test_without_a_token_garbage_is_refused_for_the_token_first() -> None:
    _, runner, channel = await _running(auth_tokens=["s3cret"])
    try:
        assert (await _code(channel, RECOMMEND, GARBAGE))[0] == grpc.StatusCode.UNAUTHENTICATED
        code, _ = await _code(channel, RECOMMEND, GARBAGE, metadata=(("authorization", "Bearer s3cret"),))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
        await runner.stop()


async def test_the_health_only_port_answers_garbage_with_invalid_argument() -> None:
    _, runner, channel = await _running(health_port=0)
    health_channel = grpc.aio.insecure_channel(f"127.0.0.1:{runner.health_port}")
    try:
        assert (await _code(health_channel, HEALTH_CHECK, GARBAGE))[0] == grpc.StatusCode.INVALID_ARGUMENT
        response = await health_pb2_grpc.HealthStub(health_channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await health_channel.close()
        await channel.close()
        await runner.stop()
