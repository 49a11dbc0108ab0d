"""Ranking service settings (env prefix ``RANKING_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings, TritonSettings


class RankingSettings(ServiceSettings):
    """Settings of the ranking service."""

    model_config = SettingsConfigDict(env_prefix="RANKING_")

    port: int = Field(50054, ge=0, le=65535)
    """gRPC port."""
    triton: TritonSettings = TritonSettings()
    """Triton endpoint and call timeout."""
    model_name: str = "ranker"
    """Triton model that returns label logits for an instruction."""
    max_instruction_chars: int = Field(16_000, gt=0)
    """Longest instruction accepted; longer ones are INVALID_ARGUMENT (the ranker's context is bounded)."""
