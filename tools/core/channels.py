"""The one way the offline tools (the CLI, evaluation, benchmarks, the local launcher) open a channel to a service.

The channel is the services' own (:func:`services.common.grpc_client.open_channel`: the same keepalive, balancing
and TLS handling), plus what a caller of the public API may need that services never send each other: a bearer
token (``authorization: Bearer <token>`` metadata, checked by the gateway's auth interceptor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.grpc_client import open_channel
from services.common.settings import ClientTlsSettings


@dataclass(frozen=True)
class ClientCredentials:
    """How a tool reaches a service: TLS (CA, the mutual-TLS pair, the certificate's name) and a bearer token."""

    tls: ClientTlsSettings = field(default_factory=ClientTlsSettings)
    token: str = ""
    """Sent as ``authorization: Bearer <token>`` on every call; empty sends none."""

    @classmethod
    def from_files(cls, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                   server_name: str | None = None, token: str = "") -> ClientCredentials:
        """TLS when a CA is given (``ca``; ``cert`` and ``key`` together for mutual TLS); plaintext otherwise.

        Raises:
            ValueError: only one of ``cert`` and ``key``, or a file that does not exist.
        """
        tls = ClientTlsSettings(enabled=ca is not None, ca_path=ca, cert_path=cert, key_path=key,
                                server_name=server_name)
        return cls(tls=tls, token=token)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


PLAINTEXT = ClientCredentials()


class _Metadata(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds fixed metadata (the bearer token) to every unary call (every RPC of this API is unary)."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        details = client_call_details._replace(
            metadata=grpc.aio.Metadata(*(tuple(client_call_details.metadata or ()) + self._metadata)))
        return await continuation(details, request)


def open_tool_channel(addr: str, credentials: ClientCredentials = PLAINTEXT, *,
                      max_attempts: int = 1) -> grpc.aio.Channel:
    """An asyncio channel to ``addr``; ``max_attempts`` > 1 retries UNAVAILABLE (1: a benchmark sees every error)."""
    interceptors = [_Metadata(credentials.metadata())] if credentials.token else []
    return open_channel(addr, max_attempts=max_attempts, tls=credentials.tls, interceptors=interceptors)
