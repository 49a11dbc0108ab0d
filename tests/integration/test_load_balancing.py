"""Per-request load balancing between services: round_robin channels and servers that retire connections."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_client import open_channel
from services.common.server import ServiceRunner
from services.common.settings import ServiceSettings

_PEER_METHOD = "/instructrec.test.Peer/Get"


class _CountingHealth(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Check(self, request, context):
        self.calls += 1
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _counting_server() -> tuple[grpc.aio.Server, _CountingHealth, int]:
    server = grpc.aio.server()
    servicer = _CountingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, port


async def test_a_service_channel_spreads_calls_over_every_address_of_its_peer():
    # Two replicas behind one name (as a headless Service resolves): both get calls from one channel.
    (one, first, port1), (two, second, port2) = await _counting_server(), await _counting_server()
    channel = open_channel(f"ipv4:127.0.0.1:{port1},127.0.0.1:{port2}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        await asyncio.sleep(0.3)  # round_robin connects to every address; let the second become ready
        for _ in range(40):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert first.calls + second.calls == 41
        assert min(first.calls, second.calls) >= 10, (first.calls, second.calls)
    finally:
        await channel.close()
        await one.stop(None)
        await two.stop(None)


class _PeerService:
    """A service whose one method answers with the caller's address as the server sees it."""

    name = "peer"
    full_names = ()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        async def get(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return context.peer().encode()

        handler = grpc.method_handlers_generic_handler(
            "instructrec.test.Peer", {"Get": grpc.unary_unary_rpc_method_handler(get)})
        server.add_generic_rpc_handlers((handler,))

    async def start(self) -> None:
        pass

    async def is_ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass


async def test_services_retire_client_connections_and_calls_keep_working_over_a_new_one():
    runner = ServiceRunner(ServiceSettings(host="127.0.0.1", max_connection_age_s=0.5), _PeerService())
    port = await runner.start()
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        get = channel.unary_unary(_PEER_METHOD)
        first = await get(b"", timeout=5)
        await asyncio.sleep(2.0)  # past the age (gRPC adds up to 10 % jitter): the server sends GOAWAY
        second = await get(b"", timeout=5)
        assert first and second and first != second  # a new connection (another client port)
    finally:
        await channel.close()
        await runner.stop()


async def _health_server(status: int) -> tuple[grpc.aio.Server, int]:
    from grpc_health.v1 import health

    servicer = health.aio.HealthServicer()
    await servicer.set("", status)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_the_gateway_counts_a_peer_serving_while_one_of_its_replicas_is_not():
    from services.gateway.clients import GrpcStages
    from services.gateway.settings import GatewaySettings

    serving, port1 = await _health_server(health_pb2.HealthCheckResponse.SERVING)
    not_serving, port2 = await _health_server(health_pb2.HealthCheckResponse.NOT_SERVING)
    lonely, port3 = await _health_server(health_pb2.HealthCheckResponse.NOT_SERVING)
    stages = GrpcStages(GatewaySettings(instruction_addr=f"ipv4:127.0.0.1:{port1},127.0.0.1:{port2}",
                                        retrieval_addr=f"127.0.0.1:{port3}"))
    try:
        await stages.channels["instruction"].channel_ready()
        await asyncio.sleep(0.3)  # both replicas connected
        assert all([await stages.serving("instruction") for _ in range(20)])
        assert not await stages.serving("retrieval")
    finally:
        await stages.close()
        for server in (serving, not_serving, lonely):
            await server.stop(None)
