"""Channels to downstream services: one per peer, balanced per request over the peer's addresses (round_robin),
retries for UNAVAILABLE only, in the service config."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import tracing
from services.common.settings import ClientTlsSettings


def retry_service_config(max_attempts: int = 3, initial_backoff_s: float = 0.05) -> str:
    """A gRPC service config that retries UNAVAILABLE (the peer restarting or a connection reset).

    No client-side health checking: a service that reports NOT_SERVING (a model missing on Triton) still
    answers usefully (cached statements, implicit-only instructions, popularity candidates) or with a precise
    error, which the gateway turns into a degraded answer; Kubernetes' readiness probes take such pods out of
    the headless Service's addresses for new resolutions."""
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


def reconnect_options(max_backoff_s: float) -> list[tuple[str, object]]:
    """Channel options that find a restarted peer within ``max_backoff_s`` (gRPC's default backoff reaches 120 s)."""
    return [
        ("grpc.initial_reconnect_backoff_ms", min(200, int(max_backoff_s * 1000))),
        ("grpc.min_reconnect_backoff_ms", min(200, int(max_backoff_s * 1000))),
        ("grpc.max_reconnect_backoff_ms", int(max_backoff_s * 1000)),
        ("grpc.keepalive_time_ms", 30_000),
    ]


def open_channel(
    addr: str, max_attempts: int = 3, tls: ClientTlsSettings | None = None, max_reconnect_backoff_s: float = 2.0,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A long-lived channel to a downstream service.

    Args:
        addr: host:port of the peer.
        max_attempts: Attempts per call on UNAVAILABLE (the retry policy lives in the service config); 1 disables.
        tls: TLS to the peer; None or disabled means plaintext.
        max_reconnect_backoff_s: Upper bound of the reconnect backoff.
        interceptors: Client interceptors (the tools' bearer token).
    """
    # Per-request balancing over every address the name resolves to (a headless Service: one per pod); with a
    # single address (a ClusterIP Service, localhost) it is one connection, as pick_first would be.
    # gRPC re-resolves a name at most every 30 s by default: after a rollout (a GOAWAY from the old pod) the
    # caller must find the new pod's address within seconds.
    options = [*reconnect_options(max_reconnect_backoff_s), ("grpc.lb_policy_name", "round_robin"),
               ("grpc.dns_min_time_between_resolutions_ms", 2_000)]
    interceptors = [*tracing.client_interceptors(), *interceptors]  # none when tracing is off
    if max_attempts > 1:
        options += [("grpc.enable_retries", 1), ("grpc.service_config", retry_service_config(max_attempts))]
    else:
        options.append(("grpc.enable_retries", 0))
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(addr, options=options, interceptors=list(interceptors) or None)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    root, key, chain = tls.files()
    credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    return grpc.aio.secure_channel(addr, credentials, options=options, interceptors=list(interceptors) or None)


async def is_serving(channel: grpc.aio.Channel, service: str = "", timeout_s: float = 1.0) -> bool:
    """Ask a peer's standard health service whether it is SERVING."""
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    except grpc.aio.AioRpcError:
        return False
    return response.status == health_pb2.HealthCheckResponse.SERVING
