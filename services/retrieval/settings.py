"""Retrieval service settings (env prefix ``RETRIEVAL_``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import DEFAULT_DATA_DIR, ROOT, ServiceSettings, TritonSettings
from services.core.contracts import (
    INTENT_MIN_CONFIDENCE,
    RECENT_HISTORY_ITEMS,
    RETRIEVAL_HISTORY_WEIGHT,
    SEQUENCE_ENCODER,
    TEXT_ENCODER,
)
from services.core.filters import FilterLimits
from services.core.fusion import SERVED_RETRIEVAL_FUSION, RetrievalFusion, SourceWeights, read_fusion_file


class SourceWeightsSettings(BaseModel):
    """Weights of the retrieval sources in one situation (see services/core/fusion.py)."""

    sequence: float = Field(1.0, ge=0, allow_inf_nan=False)
    """Weight of the sequence model's logit."""
    text: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Weight of the text encoder's cosine / temperature."""
    popularity: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Weight of log(1 + training interactions)."""
    intent: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Weight of the query's understood attribute values (services/core/intent.py; only with a query)."""


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
    recent_history_items: int = Field(RECENT_HISTORY_ITEMS, gt=0)
    """Most recent history items used for the request text and the history vector."""
    sequence_model_name: str = SEQUENCE_ENCODER
    """Triton model that turns an item history into a user vector (the sequential recommender)."""
    sequence_index_dir: Path = ROOT / "var" / "index-sequence"
    """Folder with the sequence model's item index (`instructrec build-index`). Missing: text retrieval only,
    until an index appears (the service watches for it)."""
    sequence_history_items: int = Field(50, gt=0)
    """Most recent history items sent to the sequence model (the length it was trained on)."""
    source_candidates: int = Field(100, gt=0)
    """Candidates each source (sequence index, text index) contributes to the union that the fused rule
    scores; the top num_candidates of the union are returned."""
    fusion_with_query: SourceWeightsSettings = SourceWeightsSettings(**asdict(SERVED_RETRIEVAL_FUSION.with_query))
    """Fused score weights for requests with a query (``sequence * s_seq + text * cos / 0.05 + popularity *
    log(1 + count)``), fitted on validation users by `instructrec fit-fusion --stage
    retrieval` (tools/train/adapters/retrieval_fusion.json; a unit test keeps this default equal to it)."""
    fusion_without_query: SourceWeightsSettings = SourceWeightsSettings(
        **asdict(SERVED_RETRIEVAL_FUSION.without_query))
    """Fused score weights for requests without a query. A text weight of 0 means such requests make no
    text-encoder call."""
    fusion_without_sequence: SourceWeightsSettings = SourceWeightsSettings(
        **asdict(SERVED_RETRIEVAL_FUSION.without_sequence))
    """Fused score weights when the sequence model cannot run (an anonymous caller; a history of items newer
    than the model; the model failed); the sequence weight must be 0. Fitted on anonymous requests with a
    query."""
    fusion_path: Path | None = None
    """A fitted weights file (``instructrec fit-fusion --stage retrieval --write``, or a data set workspace's
    ``retrieval_fusion.json`` from ``instructrec bootstrap``): when set, its three situations replace the
    ``fusion_*`` settings, so what was fitted is what is served. A missing or malformed file stops the start."""
    catalog_poll_s: float = Field(5.0, ge=0)
    """How often the catalog file is checked for added items (``instructrec add-items``), which are then served
    without a restart (0: never; changed or removed items always need a restart)."""
    index_poll_s: float = Field(5.0, ge=0)
    """How often the index folders are checked for a rebuilt index (0: never). A new index is served once
    Triton serves the model version it was built with; until then the previous pair keeps serving."""

    max_filters: int = Field(16, ge=0)
    """Most attribute filters per request."""
    max_filter_values: int = Field(100, gt=0)
    """Most values in one filter's value set."""
    exact_filter_max_items: int = Field(5_000, ge=0)
    """With filters that allow at most this many catalog items, every allowed item is scored by the fused rule
    (exact: a narrow filter still yields num_candidates when that many items match); above it, each source
    over-fetches in proportion to the filters' selectivity (and falls back to exact scoring if that is short)."""
    filter_overfetch: float = Field(1.5, ge=1.0)
    """Safety factor of that over-fetch: a source fetches ``source_candidates * filter_overfetch / share``
    items, ``share`` the fraction of the catalog the filters allow."""
    intent_weight: float | None = Field(None, ge=0.0)
    """Overrides every situation's fitted ``intent`` weight (the query's understood attribute values,
    ``services/core/intent.py``: ``weight * log(p(item's value | query) x V)`` per named attribute, V the
    attribute's number of values); unset: the fitted weights; 0 turns intention understanding off (no extra
    text-encoder call: the heads-off ablation). Needs the intent model the index build writes."""
    intent_min_confidence: float = Field(INTENT_MIN_CONFIDENCE, ge=0.0, le=1.0)
    """An attribute counts as named by the query when 1 - p(NONE) is at least this."""

    def filter_limits(self) -> FilterLimits:
        """Bounds on one request's filters."""
        return FilterLimits(self.max_filters, self.max_filter_values, self.max_id_chars)

    def fusion(self) -> RetrievalFusion:
        """The fused rule's weights per situation (from ``fusion_path`` when set)."""
        if self.fusion_path is not None:
            return read_fusion_file(self.fusion_path)
        return RetrievalFusion(with_query=SourceWeights(**self.fusion_with_query.model_dump()),
                               without_query=SourceWeights(**self.fusion_without_query.model_dump()),
                               without_sequence=SourceWeights(**self.fusion_without_sequence.model_dump()))

