"""Gateway settings (env prefix ``GATEWAY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import DEFAULT_DATA_DIR, ClientTlsSettings, ServiceSettings
from services.core.contracts import FUSE_RETRIEVAL_SCORES
from services.core.filters import FilterLimits
from services.core.prompts import MAX_CANDIDATES


class GatewaySettings(ServiceSettings):
    """Settings of the gateway (the public RecommendService)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    port: int = Field(50051, ge=0, le=65535)
    """gRPC port of the public RecommendService."""
    catalog_path: Path = DEFAULT_DATA_DIR / "items.jsonl"
    """Catalog JSON Lines file (titles, id validation)."""
    interactions_path: Path | None = DEFAULT_DATA_DIR / "train.csv"
    """Seeds an interaction store that has not loaded this file yet (the training split only, so nothing
    evaluated leaks into serving). None: no seed."""
    interaction_store: str = ""
    """Where interactions are recorded and every replica reads histories: a ``postgresql://`` URL (user,
    password and database may come from ``PGUSER``/``PGPASSWORD``/``PGDATABASE``) or a SQLite file. Empty:
    ``interactions.sqlite3`` beside ``interactions_path`` (or the catalog)."""
    store_start_wait_s: float = Field(120.0, ge=0)
    """At start-up, how long to keep trying to reach the interaction store (a database still starting) before
    giving up with an error; the gateway is not SERVING meanwhile."""
    history_max_items: int = Field(200, gt=0)
    """A user's history is their newest this many interactions (what retrieval and the instruction read)."""
    max_interactions_per_batch: int = Field(1_000, gt=0)
    """Most interactions in one RecordInteractions call."""
    max_event_time_ahead_s: float = Field(86_400.0, ge=0)
    """An event time more than this far past the gateway's clock is refused (a clock or unit error)."""
    store_timeout_s: float = Field(2.0, gt=0)
    """Longest wait for the interaction store on Recommend (past it the user is served without history,
    degraded) and on RecordInteractions (past it: UNAVAILABLE, nothing acknowledged; retry the batch)."""
    instruction_addr: str = "localhost:50052"
    """InstructionService host:port."""
    retrieval_addr: str = "localhost:50053"
    """RetrievalService host:port."""
    ranking_addr: str = "localhost:50054"
    """RankingService host:port."""
    instruction_timeout_s: float = Field(40.0, gt=0)
    """Longest wait for an instruction (includes a preference statement not yet cached)."""
    retrieval_timeout_s: float = Field(5.0, gt=0)
    """Longest wait for candidates."""
    read_queries: bool = True
    """Read each query (the instruction service's ReadQuery) and act on it: exclusions and bounds as filters,
    wanted values as filters relaxed when too few items meet them, references as history (docs/serving.md).
    Off: the query goes to retrieval as written."""
    relax_below_items: int = Field(1, ge=0)
    """Read wanted values are relaxed (all of -> any of -> dropped) only while fewer than this many items meet
    the request; exclusions and bounds never are. 1 (default): only when no item meets it, so a request that a
    few items meet gets those few (fewer_items) rather than a page padded with items it did not ask for.
    A value >= num_items pads every page. Caller-supplied candidates are re-ranked, not searched: wanted values
    are relaxed until the asked number of them remain (docs/reading.md)."""
    reading_timeout_s: float = Field(2.0, gt=0)
    """Longest wait for a query's reading; past it (or on any reader failure) the query is used as written and
    the answer says degraded."""
    ranking_timeout_s: float = Field(30.0, gt=0)
    """Longest wait for the ranker; past it the retrieval order is returned with degraded=true."""
    request_timeout_s: float = Field(120.0, gt=0)
    """Budget of a request whose caller set no deadline."""
    degrade_reserve_s: float = Field(0.05, ge=0)
    """Time kept back from the ranking hop so a degraded answer can still reach the caller in time."""
    default_num_items: int = Field(10, gt=0)
    """Items returned when num_items is 0."""
    num_candidates: int = Field(MAX_CANDIDATES, gt=0, le=MAX_CANDIDATES)
    """Candidates retrieved and ranked per request."""
    fuse_retrieval_scores: bool = FUSE_RETRIEVAL_SCORES
    """Pass each candidate's retrieval score to the ranker, which fuses it with the LM's (RANKING_LM_WEIGHT);
    caller-supplied candidates are scored by the retrieval service first. False: the LM ranker alone orders
    the candidates (InstructRec's pure re-ranking)."""
    retry_max_attempts: int = Field(3, ge=1, le=5)
    """Attempts per downstream call on UNAVAILABLE (gRPC channel retry policy)."""
    wait_for_ready: bool = True
    """Retrieval and instruction calls wait (within their hop timeout) for a reconnecting peer instead of
    failing at once, so a restarting service costs latency, not errors. Ranking calls never wait: an
    unreachable ranker gets the degraded answer at once."""
    client_tls: ClientTlsSettings = ClientTlsSettings()
    """TLS (and client certificate for mutual TLS) of the channels to the internal services."""
    max_reconnect_backoff_s: float = Field(2.0, gt=0)
    """Upper bound of gRPC's reconnect backoff towards the internal services."""
    rules_path: Path | None = None
    """Business rules file (JSON with a ``version``; format in docs/business-rules.md): blocked items
    and attribute values, pinned and boosted items, per-caller default filters and diversity. None: no rules.
    A file that is missing or malformed at start-up stops the gateway from starting."""
    catalog_poll_s: float = Field(5.0, ge=0)
    """How often the catalog file is checked for added items (``instructrec add-items``), which are then served
    without a restart (0: never; changed or removed items always need a restart)."""
    rules_poll_s: float = Field(5.0, ge=0)
    """How often the rules file is checked for a change (0: read once at start-up). A changed file is served
    from the next request on; a malformed one is refused with one error log line and the previous rules
    keep serving."""
    max_filters: int = Field(16, ge=0)
    """Most attribute filters per request (the caller's defaults from the rules file come on top)."""
    max_filter_values: int = Field(100, gt=0)
    """Most values in one filter's value set."""
    diversity_pool_candidates: int = Field(100, gt=0)
    """With a diversity rule, this many candidates are retrieved and the first num_candidates that keep the
    cap are ranked, so the cap still leaves num_items items when the catalog allows it."""

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.default_num_items > self.num_candidates:
            raise ValueError("default_num_items cannot exceed num_candidates")
        if self.rules_path is not None and not self.rules_path.is_file():
            raise ValueError(f"rules_path {self.rules_path} is not a file")
        return self

    def interaction_store_target(self) -> str:
        """The store's URL or SQLite file (the default resolved)."""
        if self.interaction_store:
            return self.interaction_store
        return str((self.interactions_path or self.catalog_path).parent / "interactions.sqlite3")

    def filter_limits(self) -> FilterLimits:
        """Bounds on one request's filters."""
        return FilterLimits(self.max_filters, self.max_filter_values, self.max_id_chars)
