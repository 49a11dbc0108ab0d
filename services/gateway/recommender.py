"""The Recommend pipeline: validate, resolve history, retrieve, instruct, rank, apply the business rules (no
gRPC or Triton here)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.common.errors import InvalidArgument, ServiceError, Unavailable
from services.common.interaction_store import StoreError
from services.common.metrics import DEGRADED, STAGE_LATENCY
from services.core.catalog import Catalog
from services.core.deadlines import Budget
from services.core.filters import AttributeFilter, CatalogAttributes, DiversityRule, diversify
from services.core.prompts import MAX_CANDIDATES
from services.core.reading import Reading
from services.core.rules import Policy, Removal, Rules, SourcedFilter
from services.core.validation import Limits, require_known_items
from services.gateway.reading import ReadingPlan, Step
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

Scored = list[tuple[str, float]]
Versions = list[tuple[str, str]]
Understood = list[tuple[str, str, float]]  # (attribute, value, probability) read off the query


class Stages(Protocol):
    """The downstream services, as the pipeline sees them. Each raises ServiceError subclasses."""

    async def retrieve(
        self, history: Sequence[str], query: str, *, exclude: Sequence[str], k: int, timeout_s: float,
        candidates: Sequence[str] = (), filters: Sequence[AttributeFilter] = (),
    ) -> tuple[Scored, Versions, Understood]:
        """Top k (or the given candidates, scored) that every filter allows, never history or exclusions;
        and what retrieval understood the query to ask for."""

    async def instruct(
        self, history: Sequence[str], query: str, *, candidates: Sequence[str], timeout_s: float,
        reading: Reading | None = None,
    ) -> tuple[str, str, Versions, bool]:
        """(instruction, template id, model versions, whether the query was cut to fit the ranker's prompt)."""

    async def read(self, query: str, *, timeout_s: float) -> tuple[Reading, Versions]:
        """The query's reading (constraints, references, residual text) and the reader version."""

    async def rank(
        self, instruction: str, *, candidates: Sequence[str], timeout_s: float,
        retrieval_scores: Sequence[float] = (),
    ) -> tuple[Scored, Versions]: ...


@dataclass
class RecommendQuery:
    """A Recommend request in domain terms."""

    user_id: str = ""
    history_item_ids: list[str] = field(default_factory=list)
    query: str = ""
    num_items: int = 0
    exclude_item_ids: list[str] = field(default_factory=list)
    candidate_item_ids: list[str] = field(default_factory=list)
    filters: list[AttributeFilter] = field(default_factory=list)
    diversity: DiversityRule | None = None
    caller_id: str = ""


@dataclass
class RecommendResult:
    """Recommendations and how they were made."""

    items: list[tuple[str, str, float]] = field(default_factory=list)  # (item_id, title, score)
    instruction: str = ""
    template_id: str = ""
    degraded: bool = False
    degraded_reasons: list[str] = field(default_factory=list)
    query_truncated: bool = False  # the instruction carries only the start of the query (retrieval had all)
    model_versions: Versions = field(default_factory=list)
    unknown_history_item_ids: list[str] = field(default_factory=list)
    stage_timings: list[tuple[str, float]] = field(default_factory=list)  # (stage, ms)
    applied_filters: list[SourcedFilter] = field(default_factory=list)
    rules_version: str = ""
    applied_rules: list[str] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)
    fewer_items: bool = False  # fewer than num_items passed the filters and rules
    understood_intent: Understood = field(default_factory=list)
    reading: Reading | None = None  # how the query was read (None: no query, or the reader failed)
    relaxed_constraints: list[str] = field(default_factory=list)  # read constraints given up, in order


class Histories(Protocol):
    """Where stored histories come from (:class:`services.gateway.interactions.InteractionLog`)."""

    async def history(self, user_id: str) -> list[str] | None:
        """The user's recent items, oldest first; None for an unknown user. Raises StoreError on failure."""


class Recommender:
    """Orchestrates one Recommend request over the stages."""

    def __init__(self, settings: GatewaySettings, catalog: Catalog, store: Histories, stages: Stages, *,
                 rules: Callable[[], Rules] | None = None, attributes: CatalogAttributes | None = None) -> None:
        """
        Args:
            rules: Returns the rules to serve a request with (read once per request); None: no rules.
            attributes: The catalog's attributes (built from ``catalog`` when None).
        """
        self._s = settings
        self._catalog = catalog
        self._store = store
        self._stages = stages
        self._limits = Limits.of(settings)
        self._filter_limits = settings.filter_limits()
        self._attributes = attributes or CatalogAttributes(catalog)
        empty = Rules()
        self._rules = rules or (lambda: empty)

    def validate(self, q: RecommendQuery) -> None:
        """Raises InvalidArgument naming the offending field."""
        s, limits = self._s, self._limits
        limits.check_id("user_id", q.user_id)
        limits.check_id("caller_id", q.caller_id)
        limits.check_query(q.query)
        if q.num_items < 0:
            raise InvalidArgument(f"num_items: must be >= 0 (0 means {s.default_num_items}), got {q.num_items}")
        if q.num_items > s.num_candidates and not q.candidate_item_ids:
            raise InvalidArgument(f"num_items: at most {s.num_candidates}, got {q.num_items}")
        limits.check_ids("history_item_ids", q.history_item_ids)
        limits.check_ids("exclude_item_ids", q.exclude_item_ids)
        limits.check_ids("candidate_item_ids", q.candidate_item_ids, MAX_CANDIDATES)
        limits.check_distinct("candidate_item_ids", q.candidate_item_ids)
        require_known_items(self._catalog, "candidate_item_ids", q.candidate_item_ids)
        self._attributes.validate_filters(q.filters, self._filter_limits)
        if q.diversity is not None:
            self._attributes.validate_diversity(q.diversity, self._filter_limits)

    async def resolve_history(self, q: RecommendQuery, result: RecommendResult) -> tuple[list[str], list[str]]:
        """The history to use (request's, else the stored one, else empty) and its ids unknown to the catalog.

        A store that fails leaves the user without history: the answer is not personal and says degraded."""
        raw: list[str] = list(q.history_item_ids)
        if not raw and q.user_id:
            try:
                with self._timed(result, "history"):
                    raw = await self._store.history(q.user_id) or []
            except StoreError as exc:
                log.warning("degraded: reading the history failed", extra={"error": str(exc)})
                DEGRADED.labels("gateway", "history").inc()
                result.degraded = True
                result.degraded_reasons.append(f"history skipped (the interaction store failed): {exc}")
        known = [i for i in raw if i in self._catalog]
        unknown = [i for i in raw if i not in self._catalog]
        return known, unknown

    async def recommend(self, q: RecommendQuery, time_remaining_s: float | None) -> RecommendResult:
        """Run the pipeline for one request.

        Ranking (and writing its instruction) is best effort: when either fails, the retrieval order is
        returned with ``degraded=True`` and the reason. Retrieval failure fails the request, except for
        caller-supplied candidates: their retrieval scores only refine the ranking, so without them the ranker
        alone decides (degraded). With ``fuse_retrieval_scores`` the ranker gets each candidate's retrieval
        score to fuse with its own (the caller's candidates are scored by the retrieval service first).

        Filters (the request's, the caller's defaults, the rules' blocked values) go to retrieval, which
        searches only the items they allow; the caller's candidates are screened here. After ranking,
        :meth:`services.core.rules.Policy.order` checks every item again, boosts, pins, keeps the diversity
        cap and cuts to ``num_items``; the result says what was applied and removed.
        """
        self.validate(q)
        s = self._s
        budget = Budget(s.request_timeout_s if time_remaining_s is None else time_remaining_s)
        result = RecommendResult()
        num_items = q.num_items or s.default_num_items
        history, result.unknown_history_item_ids = await self.resolve_history(q, result)
        rules = self._rules()
        plan = ReadingPlan(await self._read(q, result, budget), q.query)
        steps = list(plan.steps())

        def policy_for(step: Step) -> Policy:
            return Policy.build(rules, filters=q.filters, diversity=q.diversity, caller_id=q.caller_id,
                                read_filters=step.filters)

        retrieval_scores: list[float] = []
        if q.candidate_item_ids:
            num_items = min(q.num_items or s.default_num_items, len(q.candidate_item_ids))
            # The strictest read constraints that leave enough of the caller's candidates: re-ranking keeps what
            # it was given (wanted values relaxed) unless the request excludes or bounds it out.
            for step in steps:
                policy = policy_for(step)
                candidates, result.removed = policy.screen([(i, 0.0) for i in q.candidate_item_ids], self._catalog)
                if len(candidates) >= num_items:
                    break
            result.relaxed_constraints = list(step.relaxed)
            candidate_ids = [i for i, _ in candidates]
            if s.fuse_retrieval_scores and candidate_ids:
                try:
                    with self._timed(result, "retrieval"):
                        timeout_s = budget.hop("retrieval", s.retrieval_timeout_s, reserve_s=s.degrade_reserve_s)
                        scored, versions, result.understood_intent = await self._stages.retrieve(
                            plan.history(history), plan.retrieval_query, exclude=[], k=0, timeout_s=timeout_s,
                            candidates=candidate_ids, filters=policy.item_filters,
                        )
                    by_id = dict(scored)
                    if set(by_id) != set(candidate_ids):
                        raise Unavailable(f"retrieval: scored {len(by_id)} items that are not the "
                                          f"{len(candidate_ids)} candidates (an older retrieval service?)")
                    result.model_versions += versions
                    retrieval_scores = [by_id[i] for i in candidate_ids]
                    candidates = scored  # the fallback order if ranking fails
                except ServiceError as exc:
                    log.warning("degraded: retrieval scoring failed", extra={"error": str(exc)})
                    DEGRADED.labels("gateway", "retrieval").inc()
                    result.degraded = True
                    result.degraded_reasons.append(f"retrieval scores skipped: {exc}")
        else:
            for step in steps:  # relax read constraints (never exclusions or bounds) while too few items meet them
                policy = policy_for(step)
                candidates = await self._retrieve(q, result, budget, plan, history, policy)
                if len(candidates) >= min(num_items, s.relax_below_items):
                    break
            result.relaxed_constraints = list(step.relaxed)
            candidate_ids = [c for c, _ in candidates]
            if s.fuse_retrieval_scores:
                retrieval_scores = [score for _, score in candidates]
        result.applied_filters = list(policy.filters)
        result.applied_rules = policy.describe()
        result.rules_version = rules.version
        if not candidates:
            self._finish(result, policy, [], num_items, history, q, plan)
            return result

        ranked: Scored | None = None
        try:
            with self._timed(result, "instruction"):
                result.instruction, result.template_id, versions, result.query_truncated = await self._stages.instruct(
                    history, q.query, candidates=candidate_ids,
                    timeout_s=budget.hop("instruction", s.instruction_timeout_s, reserve_s=s.degrade_reserve_s),
                    reading=plan.reading,
                )
            result.model_versions += versions
            with self._timed(result, "ranking"):
                ranked, versions = await self._stages.rank(
                    result.instruction, candidates=candidate_ids,
                    timeout_s=budget.hop("ranking", s.ranking_timeout_s, reserve_s=s.degrade_reserve_s),
                    retrieval_scores=retrieval_scores,
                )
            result.model_versions += versions
        except ServiceError as exc:
            stage = "instruction" if not result.template_id else "ranking"
            log.warning("degraded: %s failed", stage, extra={"error": str(exc)})
            DEGRADED.labels("gateway", stage).inc()
            result.degraded = True
            result.degraded_reasons.append(f"{stage} skipped: {exc}")
            ranked = candidates

        self._finish(result, policy, ranked, num_items, history, q, plan)
        return result

    async def _read(self, q: RecommendQuery, result: RecommendResult, budget: Budget) -> Reading | None:
        """The query's reading; None without a query, with reading off, or when the reader fails (degraded: the
        query then goes to retrieval as written)."""
        s = self._s
        if not s.read_queries or not q.query.strip():
            return None
        try:
            with self._timed(result, "reading"):
                reading, versions = await self._stages.read(
                    q.query, timeout_s=budget.hop("reading", s.reading_timeout_s, reserve_s=s.degrade_reserve_s))
        except ServiceError as exc:
            log.warning("degraded: reading the query failed", extra={"error": str(exc)})
            DEGRADED.labels("gateway", "reading").inc()
            result.degraded = True
            result.degraded_reasons.append(f"reading skipped (the query was used as written): {exc}")
            return None
        result.model_versions += versions
        result.reading = reading
        return reading

    async def _retrieve(self, q: RecommendQuery, result: RecommendResult, budget: Budget, plan: ReadingPlan,
                        history: list[str], policy: Policy) -> Scored:
        """Retrieval's candidates under ``policy``, screened again, within the diversity cap, at most
        ``num_candidates``."""
        s = self._s
        # Blocked items go to retrieval as exclusions, so they cost no candidate slot; past the id limit the
        # rest are left to the check below.
        exclude = list(dict.fromkeys([*q.exclude_item_ids, *plan.reference_ids, *sorted(policy.blocked_item_ids)]))
        exclude = exclude[:self._limits.max_ids_per_field]
        # A diversity cap would drop ranked items: rank the first candidates of a larger pool that keep it.
        k = s.num_candidates if policy.diversity is None else max(s.num_candidates, s.diversity_pool_candidates)
        with self._timed(result, "retrieval"):
            timeout_s = budget.hop("retrieval", s.retrieval_timeout_s)
            candidates, versions, result.understood_intent = await self._stages.retrieve(
                plan.history(history), plan.retrieval_query, exclude=exclude, k=k, timeout_s=timeout_s,
                filters=policy.item_filters,
            )
        result.model_versions += versions
        never = set(history) | set(q.exclude_item_ids) | set(plan.reference_ids)
        candidates = [(i, score) for i, score in candidates if i not in never]
        candidates, result.removed = policy.screen(candidates, self._catalog)
        if result.removed:
            log.warning("retrieval returned items the filters do not allow; removed",
                        extra={"removed": len(result.removed)})
        if policy.diversity is not None:
            keep = set(diversify([i for i, _ in candidates], self._catalog, policy.diversity,
                                 limit=s.num_candidates)[0])
            candidates = [c for c in candidates if c[0] in keep]
        return candidates[:s.num_candidates]

    def _finish(self, result: RecommendResult, policy: Policy, ranked: Scored, num_items: int,
                history: Sequence[str], q: RecommendQuery, plan: ReadingPlan) -> None:
        """The answer's items from the ranked list under the policy, and what it applied and removed."""
        excluded = {**dict.fromkeys(plan.reference_ids, "named in the query as a reference"),
                    **dict.fromkeys(q.exclude_item_ids, "in exclude_item_ids"),
                    **dict.fromkeys(history, "in the user's history")}
        ordered = policy.order(ranked, self._catalog, num_items, pin_blocked=excluded.get,
                               insert_pins=not q.candidate_item_ids)
        result.items = [(i, self._catalog[i].display_title(), score) for i, score in ordered.items]
        result.removed += ordered.removed
        result.applied_rules += ordered.notes
        result.fewer_items = len(result.items) < num_items

    def _timed(self, result: RecommendResult, stage: str) -> _Timer:
        return _Timer(result, stage)


class _Timer:
    def __init__(self, result: RecommendResult, stage: str) -> None:
        self._result = result
        self._stage = stage

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._start
        STAGE_LATENCY.labels("gateway", self._stage).observe(elapsed)
        self._result.stage_timings.append((self._stage, elapsed * 1000.0))
