"""The one place that builds Triton gRPC clients: async ones for the services and the tools, sync ones for tools.

Every client gets the same channel options (64 MiB messages, a reconnect backoff that finds a restarted Triton
within seconds) and, when ``TritonSettings.tls`` is enabled, the same TLS credentials (mutual TLS with a client
certificate, an optional expected server name). The services pass their own ``<PREFIX>TRITON__*`` settings; a
tool that takes a Triton address builds its settings with :func:`tool_triton_settings`, which reads TLS and the
model-control key from ``INSTRUCTREC_TRITON__*`` environment variables. Calls to Triton's model-repository API
pass ``headers=settings.model_control_headers()`` (the only calls Triton restricts).
"""

from __future__ import annotations

import grpc
import tritonclient.grpc as triton_sync
import tritonclient.grpc.aio as triton_aio
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.grpc_client import reconnect_options
from services.common.settings import TritonSettings

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message sent to or received from Triton."""


def channel_args(settings: TritonSettings) -> list[tuple[str, object]]:
    """gRPC channel options of a Triton client: message sizes, reconnect backoff, the TLS server name."""
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        *reconnect_options(settings.max_reconnect_backoff_s),
    ]
    if settings.tls.enabled and settings.tls.server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls.server_name))
    return options


def channel_credentials(settings: TritonSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials of a Triton client (with the client certificate for mutual TLS); None for plaintext."""
    if not settings.tls.enabled:
        return None
    root, key, chain = settings.tls.files()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)


def triton_client(settings: TritonSettings) -> triton_aio.InferenceServerClient:
    """An async (``grpc.aio``) Triton client for ``settings.grpc_addr``; close it with ``await client.close()``."""
    return triton_aio.InferenceServerClient(
        url=settings.grpc_addr, creds=channel_credentials(settings), channel_args=channel_args(settings)
    )


def triton_sync_client(settings: TritonSettings) -> triton_sync.InferenceServerClient:
    """A blocking Triton client for ``settings.grpc_addr``, same options and TLS as :func:`triton_client`."""
    return triton_sync.InferenceServerClient(
        url=settings.grpc_addr, creds=channel_credentials(settings), channel_args=channel_args(settings)
    )


class ToolTritonSettings(BaseSettings):
    """How the offline tools reach a Triton they are given the address of (env prefix ``INSTRUCTREC_``)."""

    model_config = SettingsConfigDict(env_prefix="INSTRUCTREC_", env_nested_delimiter="__", extra="ignore")

    triton: TritonSettings = TritonSettings()
    """Triton connection settings: ``INSTRUCTREC_TRITON__TLS__ENABLED=true``, ``..._TLS__CA_PATH``,
    ``..._TLS__CERT_PATH`` and ``..._TLS__KEY_PATH`` (mutual TLS), ``..._TLS__SERVER_NAME``; the key of Triton's
    restricted model-repository API (a push's load and index calls) in ``INSTRUCTREC_TRITON__MODEL_CONTROL_KEY``
    (and ``..._MODEL_CONTROL_HEADER`` when not the default). The address always comes from the tool's own
    option."""


def tool_triton_settings(addr: str) -> TritonSettings:
    """Settings for a tool's client to the Triton at ``addr``, TLS and the model-control key from
    ``INSTRUCTREC_TRITON__*``.

    Raises:
        pydantic.ValidationError: the TLS variables name files that do not exist, or half a key pair.
    """
    return ToolTritonSettings().triton.model_copy(update={"grpc_addr": addr})
