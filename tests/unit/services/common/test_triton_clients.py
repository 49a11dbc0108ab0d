"""The Triton client factory: plaintext and (mutual) TLS clients, sync and async, against a real gRPC server.

The server is a stand-in for Triton's gRPC endpoint (only ``ServerLive``), plaintext or requiring client
certificates, on a free port: a client reaches it only if the factory gave it the right channel.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from services.common.settings import ClientTlsSettings, TritonSettings
from services.common.triton_clients import (
    MAX_MESSAGE_BYTES,
    channel_args,
    channel_credentials,
    tool_triton_settings,
    triton_client,
    triton_sync_client,
)
from tests.integration.certs import Certs, make_certs


class _Live(service_pb2_grpc.GRPCInferenceServiceServicer):
    def ServerLive(self, request, context):  # noqa: N802 - the proto's method name
        return service_pb2.ServerLiveResponse(live=True)


def _serve(certs: Certs | None) -> tuple[grpc.Server, str]:
    """A thread-pool server (so blocking clients in the test's event loop still get answers) on a free port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Live(), server)
    if certs is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
            root_certificates=certs.ca.read_bytes(), require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def plaintext_addr() -> Iterator[str]:
    server, addr = _serve(None)
    yield addr
    server.stop(None)


@pytest.fixture(scope="module")
def mtls_addr(certs: Certs) -> Iterator[str]:
    server, addr = _serve(certs)
    yield addr
    server.stop(None)


def _mtls(certs: Certs, addr: str, server_name: str | None = None) -> TritonSettings:
    tls = ClientTlsSettings(enabled=True, ca_path=certs.ca, cert_path=certs.client_cert, key_path=certs.client_key,
                            server_name=server_name)
    return TritonSettings(grpc_addr=addr, tls=tls)


def test_plaintext_settings_give_an_insecure_channel_with_the_shared_options() -> None:
    settings = TritonSettings(grpc_addr="triton:8001", max_reconnect_backoff_s=3.0)
    options = dict(channel_args(settings))
    assert channel_credentials(settings) is None
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    assert options["grpc.max_reconnect_backoff_ms"] == 3000
    assert "grpc.ssl_target_name_override" not in options


def test_tls_settings_give_credentials_and_the_expected_server_name(certs: Certs) -> None:
    settings = _mtls(certs, "10.0.0.7:8001", server_name="triton.internal")
    assert isinstance(channel_credentials(settings), grpc.ChannelCredentials)
    assert dict(channel_args(settings))["grpc.ssl_target_name_override"] == "triton.internal"


def test_sync_clients_reach_a_plaintext_and_a_mutual_tls_server(certs: Certs, plaintext_addr: str,
                                                                mtls_addr: str) -> None:
    with triton_sync_client(TritonSettings(grpc_addr=plaintext_addr)) as client:
        assert client.is_server_live(client_timeout=5)
    # The certificate names localhost and 127.0.0.1: the override makes gRPC check for "localhost".
    with triton_sync_client(_mtls(certs, mtls_addr, server_name="localhost")) as client:
        assert client.is_server_live(client_timeout=5)
    with triton_sync_client(TritonSettings(grpc_addr=mtls_addr)) as plaintext, pytest.raises(InferenceServerException):
        plaintext.is_server_live(client_timeout=5)


async def test_async_clients_reach_a_plaintext_and_a_mutual_tls_server(certs: Certs, plaintext_addr: str,
                                                                       mtls_addr: str) -> None:
    for settings in (TritonSettings(grpc_addr=plaintext_addr), _mtls(certs, mtls_addr)):
        client = triton_client(settings)
        try:
            assert await client.is_server_live(client_timeout=5)
        finally:
            await client.close()
    without_client_cert = TritonSettings(grpc_addr=mtls_addr, tls=ClientTlsSettings(enabled=True, ca_path=certs.ca))
    client = triton_client(without_client_cert)
    try:
        with pytest.raises(InferenceServerException):
            await client.is_server_live(client_timeout=5)
    finally:
        await client.close()


def test_tool_settings_take_the_address_from_the_tool_and_tls_from_the_environment(
    certs: Certs, mtls_addr: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert not tool_triton_settings("triton:8001").tls.enabled
    monkeypatch.setenv("INSTRUCTREC_TRITON__GRPC_ADDR", "ignored:1")
    monkeypatch.setenv("INSTRUCTREC_TRITON__TLS__ENABLED", "true")
    monkeypatch.setenv("INSTRUCTREC_TRITON__TLS__CA_PATH", str(certs.ca))
    monkeypatch.setenv("INSTRUCTREC_TRITON__TLS__CERT_PATH", str(certs.client_cert))
    monkeypatch.setenv("INSTRUCTREC_TRITON__TLS__KEY_PATH", str(certs.client_key))
    settings = tool_triton_settings(mtls_addr)
    assert settings.grpc_addr == mtls_addr and settings.tls.enabled and settings.tls.ca_path == certs.ca
    with triton_sync_client(settings) as client:
        assert client.is_server_live(client_timeout=5)
    monkeypatch.setenv("INSTRUCTREC_TRITON__TLS__CA_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError, match="does not exist"):
        tool_triton_settings(mtls_addr)
