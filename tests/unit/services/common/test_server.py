"""The server bootstrap (``ServiceRunner``) through a real in-process grpc.aio server on port 0.

A tiny service with raw-bytes methods stands in for a real servicer: it raises whatever domain exception the
request names, so each test sees the status code and message a caller would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from services.common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.common.server import LIVENESS_SERVICE, ServiceRunner
from services.common.settings import ServiceSettings

PROBE = "instructrec.test.Probe"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DOMAIN_ERRORS = {cls.__name__: cls for cls in
                 (InvalidArgument, NotFound, Unavailable, DeadlineExceeded, ResourceExhausted, Unauthenticated)}


class _ProbeService:
    """A service whose ``Fail`` raises the exception named by the request; ``Slow`` waits to be released."""

    name = "probe"
    full_names = (PROBE,)

    def __init__(self, *, ready: bool = True) -> None:
        self.ready = ready
        self.started = self.closed = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return request

        async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            name = request.decode()
            if name in DOMAIN_ERRORS:
                raise DOMAIN_ERRORS[name](f"{name}: the caller may see this")
            raise RuntimeError("secret internals: password=hunter2")

        async def abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "aborted by the servicer")

        async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.entered.set()
            await self.release.wait()
            return b"done"

        methods = {"Echo": echo, "Fail": fail, "Abort": abort, "Slow": slow}
        handler = grpc.method_handlers_generic_handler(
            PROBE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()})
        server.add_generic_rpc_handlers((handler,))

    async def start(self) -> None:
        self.started = True

    async def is_ready(self) -> bool:
        return self.ready

    async def close(self) -> None:
        self.closed = True


def _settings(**overrides) -> ServiceSettings:
    return ServiceSettings(host="127.0.0.1", port=0, health_poll_interval_s=0.05, **overrides)


@pytest.fixture
async def probe() -> AsyncIterator[tuple[_ProbeService, ServiceRunner, grpc.aio.Channel]]:
    service = _ProbeService()
    runner = ServiceRunner(_settings(), service)
    port = await runner.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, runner, channel
    finally:
        await channel.close()
        await runner.stop()


async def _call(channel: grpc.aio.Channel, method: str, request: bytes = b"", **kwargs) -> bytes:
    return await channel.unary_unary(f"/{PROBE}/{method}")(request, timeout=5, **kwargs)


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=5)
    return response.status


async def _eventually(check, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not await check():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def _requests(code: str) -> float:
    labels = {"service": "probe", "method": "Fail", "code": code}
    return REGISTRY.get_sample_value("instructrec_rpc_requests_total", labels) or 0.0


async def _counted(code: str, expected: float) -> float:
    """The count once it reaches ``expected`` (the server counts after the status went out: on a loaded machine
    the client can read the counter first), or after 5 s."""
    for _ in range(100):
        if _requests(code) >= expected:
            break
        await asyncio.sleep(0.05)
    return _requests(code)


# ---------------------------------------------------------------- bootstrap: port, health, reflection


async def test_binds_a_free_port_for_port_0_and_serves_the_service(probe) -> None:
    service, runner, channel = probe
    assert service.started and runner.port > 0
    assert runner.metrics_port is None and runner.health_port is None  # both disabled unless configured
    assert await _call(channel, "Echo", b"hello") == b"hello"


async def test_health_is_serving_for_the_server_the_service_and_liveness(probe) -> None:
    _, _, channel = probe
    assert [await _health(channel, name) for name in ("", PROBE, LIVENESS_SERVICE)] == [SERVING] * 3


async def test_health_follows_readiness_but_liveness_stays_serving() -> None:
    service = _ProbeService(ready=False)
    runner = ServiceRunner(_settings(), service)
    port = await runner.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert (await _health(channel), await _health(channel, PROBE)) == (NOT_SERVING, NOT_SERVING)
        assert await _health(channel, LIVENESS_SERVICE) == SERVING
        service.ready = True  # picked up by the next readiness poll
        await _eventually(lambda: _is(channel, PROBE, SERVING))
        assert await _health(channel) == SERVING
        service.ready = False
        await _eventually(lambda: _is(channel, "", NOT_SERVING))
    finally:
        await channel.close()
        await runner.stop()


async def _is(channel: grpc.aio.Channel, service: str, status: int) -> bool:
    return await _health(channel, service) == status


async def test_reflection_lists_the_service_health_and_reflection(probe) -> None:
    _, _, channel = probe
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    responses = [response async for response in call]
    names = {s.name for s in responses[0].list_services_response.service}
    assert names == {PROBE, "grpc.health.v1.Health", reflection.SERVICE_NAME}


# ---------------------------------------------------------------- error interceptor


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT),
        ("NotFound", grpc.StatusCode.NOT_FOUND),
        ("Unavailable", grpc.StatusCode.UNAVAILABLE),
        ("DeadlineExceeded", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("ResourceExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("Unauthenticated", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_domain_exceptions_become_their_status_code_with_their_message(probe, error, code) -> None:
    _, _, channel = probe
    before = _requests(code.name)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(channel, "Fail", error.encode())
    assert err.value.code() == code
    assert err.value.details() == f"{error}: the caller may see this"
    assert await _counted(code.name, before + 1) == before + 1


async def test_any_other_exception_is_internal_with_a_generic_message_and_a_logged_traceback(
    probe, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, channel = probe
    before = _requests("INTERNAL")
    with caplog.at_level(logging.ERROR, logger="services.common.server"), pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(channel, "Fail", b"a bug")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error"
    (record,) = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])
    assert await _counted("INTERNAL", before + 1) == before + 1


async def test_a_servicers_own_abort_keeps_its_code(probe) -> None:
    _, _, channel = probe
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(channel, "Abort")
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "aborted by the servicer")


# ---------------------------------------------------------------- authentication


async def test_bearer_tokens_are_required_except_for_health() -> None:
    runner = ServiceRunner(_settings(auth_tokens=["s3cret", "other"]), _ProbeService())
    port = await runner.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert await _health(channel) == SERVING
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "Basic s3cret"),)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(channel, "Echo", b"x", metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await _call(channel, "Echo", b"x", metadata=(("authorization", "Bearer other"),)) == b"x"
        # The token check sits inside the error interceptor: an admitted call still gets its domain status.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, "Fail", b"NotFound", metadata=(("authorization", "bearer s3cret"),))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()
        await runner.stop()


# ---------------------------------------------------------------- shutdown


async def test_stop_turns_health_not_serving_then_lets_in_flight_calls_finish() -> None:
    service = _ProbeService()
    runner = ServiceRunner(_settings(health_port=0, shutdown_grace_s=5.0), service)
    port = await runner.start()
    assert runner.health_port not in (None, 0, port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    health_channel = grpc.aio.insecure_channel(f"127.0.0.1:{runner.health_port}")
    stopping: asyncio.Future | None = None
    try:
        assert await _health(health_channel, PROBE) == SERVING
        in_flight = asyncio.ensure_future(_call(channel, "Slow"))
        await asyncio.wait_for(service.entered.wait(), 5)
        stopping = asyncio.ensure_future(runner.stop())
        await _eventually(lambda: _is(health_channel, PROBE, NOT_SERVING))
        assert await _health(health_channel, LIVENESS_SERVICE) == NOT_SERVING
        assert not stopping.done() and not service.closed  # still draining the in-flight call
        service.release.set()
        assert await in_flight == b"done"
        await asyncio.wait_for(stopping, 5)
        assert service.closed
    finally:
        service.release.set()
        await channel.close()
        await health_channel.close()
        await (stopping if stopping is not None else runner.stop())
