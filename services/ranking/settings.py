"""Ranking service settings (env prefix ``RANKING_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings, TritonSettings
from services.core.contracts import RANKER


class RankingSettings(ServiceSettings):
    """Settings of the ranking service."""

    model_config = SettingsConfigDict(env_prefix="RANKING_")

    port: int = Field(50054, ge=0, le=65535)
    """gRPC port."""
    triton: TritonSettings = TritonSettings()
    """Triton endpoint and call timeout."""
    model_name: str = RANKER
    """Triton model that returns label logits for an instruction."""
    max_instruction_chars: int = Field(16_000, gt=0)
    """Longest instruction accepted; longer ones are INVALID_ARGUMENT (the ranker's context is bounded)."""
    lm_weight: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Weight of the LM ranker's log-probabilities against the retrieval logits when the request carries
    retrieval scores (``lm_weight * log p_LM + retrieval_score / retrieval_temperature``): 0 keeps the
    retrieval order (such requests skip the ranker model), large values the LM's. Fitted on validation users
    per model set by `instructrec fit-fusion` (tools/train/adapters/fusion.json): this default is the entry of
    the tuned models (what `make run` and the k8s deployment serve); `instructrec run --models base` sets the
    base entry."""
    retrieval_temperature: float = Field(1.0, gt=0, allow_inf_nan=False)
    """Divides the retrieval scores before fusion. The retrieval service returns fused logits (its sources
    already on the scale of their training logits), so 1."""
