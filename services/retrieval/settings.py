"""Retrieval service settings (env prefix ``RETRIEVAL_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import DEFAULT_DATA_DIR, ROOT, ServiceSettings, TritonSettings
from services.core.contracts import (
    RECENT_HISTORY_ITEMS,
    RETRIEVAL_HISTORY_WEIGHT,
    RETRIEVAL_POPULARITY_WEIGHT,
    TEXT_ENCODER,
)


class RetrievalSettings(ServiceSettings):
    """Settings of the retrieval service."""

    model_config = SettingsConfigDict(env_prefix="RETRIEVAL_")

    port: int = Field(50053, ge=0, le=65535)
    """gRPC port."""
    catalog_path: Path = DEFAULT_DATA_DIR / "items.jsonl"
    """Catalog JSON Lines file (titles for the request text)."""
    index_dir: Path = ROOT / "var" / "index"
    """Folder with items.faiss and items.json written by `instructrec build-index`."""
    triton: TritonSettings = TritonSettings(timeout_s=5.0)
    """Triton endpoint and call timeout."""
    model_name: str = TEXT_ENCODER
    """Triton model that embeds the request text."""
    default_num_candidates: int = Field(20, gt=0)
    """Candidates returned when the request asks for 0."""
    max_num_candidates: int = Field(1_000, gt=0)
    """Largest num_candidates accepted."""
    history_weight: float = Field(RETRIEVAL_HISTORY_WEIGHT, ge=0, le=1)
    """Weight of the mean of recent history item vectors against the encoded request text."""
    popularity_weight: float = Field(RETRIEVAL_POPULARITY_WEIGHT, ge=0)
    """Weight of the log-popularity prior added to the cosine score (0 = cosine only). The tuned encoder is
    trained with in-batch negatives, which removes popularity from its scores; the default is the training
    temperature, which puts it back on the scale of the logits (see docs/evaluation)."""
    recent_history_items: int = Field(RECENT_HISTORY_ITEMS, gt=0)
    """Most recent history items used for the request text and the history vector."""
