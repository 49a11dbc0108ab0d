"""Settings shared by every service; each service subclasses ``ServiceSettings`` with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = ROOT / "var" / "data" / "movielens-100k"


class TritonSettings(BaseModel):
    """How to reach Triton (set as ``<PREFIX>TRITON__GRPC_ADDR`` etc.)."""

    grpc_addr: str = "localhost:8001"
    """Triton's gRPC endpoint, host:port."""
    timeout_s: float = Field(30.0, gt=0)
    """Upper bound for one inference call; the caller's remaining deadline lowers it."""


class ServiceSettings(BaseSettings):
    """Fields every gRPC service has."""

    model_config = SettingsConfigDict(extra="ignore", env_nested_delimiter="__", validate_default=True)

    host: str = "0.0.0.0"
    """Interface the gRPC server binds."""
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
    """RPCs served at once; more are refused with RESOURCE_EXHAUSTED instead of queueing without bound."""
    health_poll_interval_s: float = Field(2.0, gt=0)
    """How often readiness (Triton models, index, downstream services) is re-checked for the health service."""
