"""Instruction service settings (env prefix ``INSTRUCTION_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import DEFAULT_DATA_DIR, DEFAULT_PREFERENCE_STORE, ServiceSettings, TritonSettings
from services.core.contracts import PREFERENCE_GENERATOR, REQUEST_READER
from services.core.prompts import DEFAULT_ITEM_NOUN, DEFAULT_MAX_HISTORY_ITEMS


class InstructionSettings(ServiceSettings):
    """Settings of the instruction service."""

    model_config = SettingsConfigDict(env_prefix="INSTRUCTION_")

    port: int = Field(50052, ge=0, le=65535)
    """gRPC port."""
    catalog_path: Path = DEFAULT_DATA_DIR / "items.jsonl"
    """Catalog JSON Lines file (titles for the instruction)."""
    catalog_poll_s: float = Field(5.0, ge=0)
    """How often the catalog file is checked for added items (``instructrec add-items``), which are then served
    without a restart (0: never; changed or removed items always need a restart)."""
    triton: TritonSettings = TritonSettings(timeout_s=60.0)
    """Triton endpoint and call timeout (generation is the slowest model call)."""
    model_name: str = PREFERENCE_GENERATOR
    """Triton model that writes explicit preference statements."""
    explicit_preference: bool = True
    """Add a generated preference statement (P2) to instructions; off serves implicit preference (P1) only."""
    preference_store_path: Path | None = DEFAULT_PREFERENCE_STORE
    """SQLite store of precomputed statements (``instructrec precompute-preferences`` fills it; misses the
    background queue writes land there too); unset: statements live in memory only."""
    preference_store_readonly: bool = False
    """Open the store read-only (replicas reading a file one writer fills, e.g. the Kubernetes CronJob):
    statements written for misses then stay in this process's memory."""
    preference_wait_s: float = Field(0.0, ge=0)
    """How long a request waits for a statement not yet written. 0 (serving): a miss gets the implicit-only
    instruction at once and its history is queued for the background workers. Evaluation runs that want every
    instruction explicit set it high."""
    preference_queue_size: int = Field(1_000, ge=1)
    """Histories the background queue holds; past it a miss is not queued (counted; the next request retries)."""
    preference_workers: int = Field(2, ge=1)
    """Background generations in flight at once (Triton batches them); bounds what misses take from serving."""
    preference_cache_size: int = Field(100_000, ge=0)
    """Statements kept in memory (LRU) in front of the store, keyed by recent history and generator version."""
    generator_version_poll_s: float = Field(5.0, gt=0)
    """How often the served generator version is read from Triton (statements of other versions are misses)."""
    recent_history_items: int = Field(DEFAULT_MAX_HISTORY_ITEMS, gt=0)
    """Most recent history items written into instructions and preference prompts (prompt length budget)."""
    read_queries: bool = True
    """Serve ``ReadQuery``: the ``request_reader`` on Triton reads a request into constraints, references and
    residual text, grounded in the catalog (its ``synonyms.json`` and ``train.csv`` beside ``catalog_path``, when
    there, name values and break title ties). Off: ``ReadQuery`` answers UNAVAILABLE and the gateway reads
    nothing (queries go to retrieval as written)."""
    reader_model_name: str = REQUEST_READER
    """Triton model that labels a request's words."""
    reading_cache_size: int = Field(10_000, ge=0)
    """Readings of repeated requests kept (LRU), keyed by the request's words and the reader version."""
    item_noun: str = DEFAULT_ITEM_NOUN
    """What an item is called in instructions ("movie")."""
    prompt_query_max_bytes: int = Field(300, gt=0)
    """Most UTF-8 bytes of the query written into an instruction; a longer query is cut at a word boundary
    and the response says ``query_truncated`` (retrieval still gets the whole query). The ranker rejects
    prompts over its ``max_prompt_tokens`` (1024), and its byte-level tokenizer makes at most one token per
    byte, so this bounds the query's share whatever its characters. 300 keeps the ranker's prompt under 1024
    tokens with 20 candidates, 10 history titles and a 48-token preference statement from MovieLens-100k
    (the rest measures at most 704 tokens over 3,000 random draws; tests/unit/services/instruction/
    test_query_budget.py checks it with the real tokenizer). Raise it with the ranker's ``max_prompt_tokens``."""
