"""What `instructrec bench` drives and how: one dataclass, defaults matching `instructrec run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.core.contracts import FUSE_RETRIEVAL_SCORES, MODEL_NAMES
from tools.bench.stats import DEFAULT_MIX

MODELS = MODEL_NAMES
"""The served models whose Triton statistics each point records."""
SERVICES = ("gateway", "instruction", "retrieval", "ranking")
"""The services the bench waits to be SERVING."""


@dataclass
class BenchConfig:
    """What to drive and how. Addresses default to `instructrec run`'s ports."""

    gateway_addr: str = "localhost:50051"
    instruction_addr: str = "localhost:50052"
    retrieval_addr: str = "localhost:50053"
    ranking_addr: str = "localhost:50054"
    triton_addr: str = "localhost:8001"
    """Triton's gRPC endpoint; TLS to it comes from ``INSTRUCTREC_TRITON__TLS__*`` (``tool_triton_settings``)."""
    data_dir: Path = Path("var/data/movielens-100k")
    repository: Path = Path("model_repository")
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    duration_s: float = 30.0
    requests_per_point: int = 0
    """When > 0, each point sends this many requests instead of running for ``duration_s``."""
    batching: str = "both"
    """"on" (the served configs), "off" (dynamic batching removed) or "both" (on, then off)."""
    batching_models: tuple[str, ...] = MODELS
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    """Config overrides for the whole run, per model (``parse_settings``); restored at the end."""
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    query_share: float = 0.5
    warmup_users: int = 32
    warmup_requests: int = 8
    overhead_requests: int = 12
    no_ranker_requests: int = 50
    baseline: bool = True
    fuse_retrieval_scores: bool = FUSE_RETRIEVAL_SCORES
    """Whether the gateway under test fuses retrieval scores (``GATEWAY_FUSE_RETRIEVAL_SCORES``): then retrieval
    encodes a text for requests with caller-supplied candidates too, and the model-only replay runs the encoder."""
    device: str = "cpu"
    request_timeout_s: float = 120.0
    seed: int | None = None
    """Seed of the request mix; None picks one from the clock (anonymous histories must be new to the
    instruction service's cache on every run, or their statements would be cached)."""
    out: Path = Path("var/bench/bench")
    plot: bool = True
    progress: bool = True
