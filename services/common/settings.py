"""Settings shared by every service; each service subclasses ``ServiceSettings`` with its own env prefix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = ROOT / "var" / "data" / "movielens-100k"
DEFAULT_PREFERENCE_STORE = ROOT / "var" / "preferences" / "movielens-100k.sqlite"


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


class ServerTlsSettings(BaseModel):
    """TLS of a gRPC server (``<PREFIX>TLS__ENABLED`` etc.); PEM files, typically from a Kubernetes Secret."""

    enabled: bool = False
    """Serve TLS instead of plaintext."""
    cert_path: Path | None = None
    """Server certificate chain (PEM)."""
    key_path: Path | None = None
    """Server private key (PEM)."""
    client_ca_path: Path | None = None
    """CA that signs client certificates; set it to require them (mutual TLS)."""

    @model_validator(mode="after")
    def _check(self) -> ServerTlsSettings:
        if self.enabled and (self.cert_path is None or self.key_path is None):
            raise ValueError("tls.enabled needs tls.cert_path and tls.key_path")
        for path in (self.cert_path, self.key_path, self.client_ca_path):
            if self.enabled and path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    def key_pair(self) -> tuple[bytes, bytes]:
        """(private key, certificate chain) as grpc.ssl_server_credentials takes them."""
        return self.key_path.read_bytes(), self.cert_path.read_bytes()

    def client_ca(self) -> bytes | None:
        return _read(self.client_ca_path)


class ClientTlsSettings(BaseModel):
    """TLS of a client channel to a peer (``<PREFIX>CLIENT_TLS__ENABLED``, ``...TRITON__TLS__ENABLED``)."""

    enabled: bool = False
    """Connect with TLS instead of plaintext."""
    ca_path: Path | None = None
    """CA that signs the peer's certificate; unset uses the system roots."""
    cert_path: Path | None = None
    """Client certificate chain for mutual TLS."""
    key_path: Path | None = None
    """Client private key for mutual TLS."""
    server_name: str | None = None
    """Expected name in the peer's certificate when it differs from the address's host."""

    @model_validator(mode="after")
    def _check(self) -> ClientTlsSettings:
        if (self.cert_path is None) != (self.key_path is None):
            raise ValueError("client TLS needs both cert_path and key_path, or neither")
        for path in (self.ca_path, self.cert_path, self.key_path):
            if self.enabled and path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    def files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) as grpc.ssl_channel_credentials takes them."""
        return _read(self.ca_path), _read(self.key_path), _read(self.cert_path)


MODEL_CONTROL_HEADER = "instructrec-model-control-key"
"""Default header of the Triton model-control key (``TritonSettings.model_control_header``)."""
GRPC_RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"
"""What Triton's gRPC endpoint puts before the header named in ``--grpc-restricted-protocol``."""


class TritonSettings(BaseModel):
    """How to reach Triton (set as ``<PREFIX>TRITON__GRPC_ADDR`` etc.)."""

    grpc_addr: str = "localhost:8001"
    """Triton's gRPC endpoint, host:port."""
    timeout_s: float = Field(30.0, gt=0)
    """Upper bound for one inference call; the caller's remaining deadline lowers it."""
    tls: ClientTlsSettings = ClientTlsSettings()
    """TLS to Triton (Triton started with --grpc-use-ssl)."""
    repair_crashed_stub: bool = True
    """When Triton answers "Stub process is not healthy" (a crashed python-backend process that Triton does not
    restart while still reporting the model READY), unload and load the model through Triton's API."""
    repair_interval_s: float = Field(10.0, gt=0)
    """At most one repair per model in this interval."""
    max_reconnect_backoff_s: float = Field(2.0, gt=0)
    """Upper bound of gRPC's reconnect backoff, so a restarted Triton is found again within seconds."""
    model_control_key: SecretStr | None = None
    """Key for Triton's model-repository API (load, unload, repository index), which Triton restricts to callers
    presenting it (``--grpc-restricted-protocol=model-repository:<header>=<key>``). Sent only on those calls (the
    stub repair, a push); inference and health never need it. Unset: those calls carry no key (a Triton
    without the restriction)."""
    model_control_header: str = Field(MODEL_CONTROL_HEADER, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    """Header (gRPC metadata key, lower case) that carries ``model_control_key``; Triton's flag names the same."""

    @model_validator(mode="after")
    def _check_model_control(self) -> TritonSettings:
        if self.model_control_header.endswith("-bin"):
            raise ValueError("model_control_header must not end in -bin (gRPC binary metadata)")
        key = self.model_control_key.get_secret_value() if self.model_control_key is not None else None
        if key is not None and not re.fullmatch(r"[A-Za-z0-9_.~-]{16,}", key):
            # It travels inside Triton's flag (``...:<header>=<key>``) and a header: no separators, no blanks.
            raise ValueError("model_control_key must be at least 16 URL-safe characters (secrets.token_urlsafe)")
        return self

    def model_control_headers(self) -> dict[str, str]:
        """The gRPC metadata of a model-repository call: the key, or none when no key is set.

        Triton's gRPC endpoint reads the header named in its flag with the prefix ``triton-grpc-protocol-``
        (its HTTP endpoint reads it as named)."""
        if self.model_control_key is None:
            return {}
        return {GRPC_RESTRICTED_HEADER_PREFIX + self.model_control_header: self.model_control_key.get_secret_value()}


class ServiceSettings(BaseSettings):
    """Fields every gRPC service has."""

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__", validate_default=True)

    host: str = "0.0.0.0"
    """Interface the gRPC server binds (``instructrec run`` sets 127.0.0.1; the Kubernetes manifests 0.0.0.0)."""
    metrics_host: str | None = None
    """Interface the /metrics endpoint binds; unset: the same as ``host``."""
    port: int = Field(0, ge=0, le=65535)
    """gRPC port; 0 binds a free port (tests)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint; unset disables it, 0 picks a free port."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Minimum level of log records."""
    log_format: Literal["json", "text"] = "json"
    """``json`` for log collectors, ``text`` for people."""
    shutdown_grace_s: float = Field(5.0, ge=0)
    """On SIGTERM, how long in-flight RPCs may finish after health turns NOT_SERVING."""
    max_concurrent_rpcs: int = Field(256, gt=0)
    """RPCs the gRPC server accepts at once (served or waiting); more are refused with RESOURCE_EXHAUSTED."""
    admission_max_inflight: int = Field(8, gt=0)
    """This service's RPCs served at once; the rest wait in arrival order (services/common/admission.py)."""
    admission_max_waiting: int = Field(128, ge=0)
    """RPCs that may wait for a slot; past it a new one is refused at once with RESOURCE_EXHAUSTED."""
    admission_max_queue_wait_s: float = Field(1.0, ge=0)
    """Longest expected wait for a slot an RPC is admitted with (also never past its deadline less one service
    time); beyond it RESOURCE_EXHAUSTED at once, so overload costs callers milliseconds, not their deadline."""
    max_connection_age_s: float = Field(300.0, ge=0)
    """Clients' connections are closed gracefully (GOAWAY) after this long, so callers re-resolve the peer's
    name and spread over replicas added since (the services' channels balance per request over every address
    a headless Service resolves to); 0 keeps connections forever."""
    health_poll_interval_s: float = Field(2.0, gt=0)
    """How often readiness (Triton models, index, downstream services) is re-checked for the health service."""
    tls: ServerTlsSettings = ServerTlsSettings()
    """TLS (and optionally mutual TLS) of this service's gRPC server."""
    health_port: int | None = Field(None, ge=0, le=65535)
    """Extra plaintext port serving only the gRPC health service, for probes that cannot speak TLS (the
    kubelet's native gRPC probe); unset: health is served on the main port only."""
    max_id_chars: int = Field(256, gt=0)
    """Longest user or item id accepted."""
    max_ids_per_field: int = Field(10_000, gt=0)
    """Most ids accepted in one repeated field (history, exclusions)."""
    max_query_chars: int = Field(1_000, gt=0)
    """Longest query accepted."""
    auth_tokens: list[SecretStr] = []
    """Bearer tokens accepted in the ``authorization`` metadata (JSON list in the env var); with none here
    and no ``auth_tokens_file``, the service accepts every caller. Health checks never need a token."""
    auth_tokens_file: Path | None = None
    """File with one accepted bearer token per line (``#`` comments), e.g. a mounted Kubernetes Secret."""

    @model_validator(mode="after")
    def _metrics_host_defaults_to_host(self) -> ServiceSettings:
        if self.metrics_host is None:
            self.metrics_host = self.host
        return self

    @model_validator(mode="after")
    def _check_tokens_file(self) -> ServiceSettings:
        if self.auth_tokens_file is not None and not self.auth_tokens_file.is_file():
            raise ValueError(f"auth_tokens_file {self.auth_tokens_file} does not exist")
        return self

    def accepted_tokens(self) -> frozenset[str]:
        """All accepted bearer tokens (empty: authentication is off)."""
        tokens = {t.get_secret_value() for t in self.auth_tokens}
        if self.auth_tokens_file is not None:
            lines = self.auth_tokens_file.read_text(encoding="utf-8").splitlines()
            tokens |= {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
        return frozenset(t for t in tokens if t)
