"""Channels to downstream services: one per peer, retries for UNAVAILABLE only, in the service config."""

from __future__ import annotations

import json

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def retry_service_config(max_attempts: int = 3, initial_backoff_s: float = 0.05) -> str:
    """A gRPC service config that retries UNAVAILABLE (the peer restarting or a connection reset)."""
    return json.dumps({
        "methodConfig": [{
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": max_attempts,
                "initialBackoff": f"{initial_backoff_s}s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
    })


def open_channel(addr: str, max_attempts: int = 3) -> grpc.aio.Channel:
    """A long-lived channel to a downstream service; ``max_attempts`` 1 disables retries."""
    options: list[tuple[str, object]] = [("grpc.keepalive_time_ms", 30_000)]
    if max_attempts > 1:
        options += [("grpc.enable_retries", 1), ("grpc.service_config", retry_service_config(max_attempts))]
    else:
        options.append(("grpc.enable_retries", 0))
    return grpc.aio.insecure_channel(addr, options=options)


async def is_serving(channel: grpc.aio.Channel, service: str = "", timeout_s: float = 1.0) -> bool:
    """Ask a peer's standard health service whether it is SERVING."""
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    except grpc.aio.AioRpcError:
        return False
    return response.status == health_pb2.HealthCheckResponse.SERVING
