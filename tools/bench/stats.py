"""Pure logic of `instructrec bench`: the request mix, latency summaries, Triton statistics deltas and ratios.

Nothing here talks to a server, so all of it is unit-tested (``tests/unit/tools/bench/test_bench.py``).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Request kinds of the mix. "known": a user of the interaction store (history from the server; the preference
# statement was cached by the warm-up, as it would be by a nightly batch in production). "anonymous": a caller
# who sends their own history, never seen before, so the statement is generated on the request's path.
# "candidates": a known user re-ranking a caller-supplied candidate list (no search; retrieval scores them).
KINDS = ("known", "anonymous", "candidates")
DEFAULT_MIX = {"known": 0.6, "anonymous": 0.15, "candidates": 0.25}

QUERIES = (
    "a funny movie for tonight",
    "something scary but not too gory",
    "a classic science fiction film",
    "a romantic comedy to watch with my partner",
    "an animated movie for the kids",
    "a tense thriller with a twist",
    "a war movie based on a true story",
    "a feel-good drama",
    "an action movie with great fights",
    "a documentary about music",
    "a quiet film noir",
    "something like Star Wars",
)


@dataclass(frozen=True)
class RequestSpec:
    """One Recommend request of the mix, in domain terms (turned into a proto by the driver)."""

    kind: str
    user_id: str = ""
    history_item_ids: tuple[str, ...] = ()
    query: str = ""
    candidate_item_ids: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``kind`` plus ``+query`` when it has one: the breakdown key in the report."""
        return self.kind + ("+query" if self.query else "")


def parse_mix(text: str) -> dict[str, float]:
    """``"known=0.6,anonymous=0.15,candidates=0.25"`` -> normalised weights (kinds not named get 0).

    Raises:
        ValueError: unknown kind, a negative or non-numeric weight, or all weights zero.
    """
    weights = dict.fromkeys(KINDS, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(f"unknown request kind {name!r}; kinds are {', '.join(KINDS)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"weight of {name!r} must be a number, got {value!r}") from None
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"weight of {name!r} must be >= 0, got {value!r}")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("the mix needs at least one kind with a positive weight")
    return {k: w / total for k, w in weights.items()}


def parse_int_list(text: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]`` (each > 0, order kept, duplicates dropped)."""
    values: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        value = int(part)
        if value <= 0:
            raise ValueError(f"values must be positive, got {value}")
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError("at least one value is required")
    return values


class RequestMix:
    """Draws requests of the realistic mix, reproducibly from a seed.

    Args:
        weights: Share of each kind (``parse_mix``).
        known_users: Users whose statements the warm-up cached (drawn uniformly).
        item_ids: Catalog ids for anonymous histories and candidate lists.
        popularity: Optional weight per item id (interaction counts), so anonymous histories and candidate lists
            look like real ones rather than uniform draws from the long tail.
        query_share: Share of requests that carry a free-text query.
        seed: Random seed of the request sequence: kinds, users, queries and list lengths.
        item_seed: Random seed of the items drawn for anonymous histories and candidate lists (default:
            ``seed``). Two mixes with the same ``seed`` and different ``item_seed`` send the same sequence of
            request shapes with different items, so the instruction service has not cached the second one's
            anonymous statements: that is how the batching-on and batching-off sweeps get comparable traffic.
        anonymous_history: (min, max) length of anonymous histories.
        num_candidates: Length of candidate lists.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        known_users: Sequence[str],
        item_ids: Sequence[str],
        *,
        popularity: Mapping[str, float] | None = None,
        query_share: float = 0.5,
        seed: int = 0,
        item_seed: int | None = None,
        anonymous_history: tuple[int, int] = (5, 15),
        num_candidates: int = 20,
    ) -> None:
        if weights.get("known", 0) + weights.get("candidates", 0) > 0 and not known_users:
            raise ValueError("known users are needed for the 'known' and 'candidates' kinds")
        if len(item_ids) < max(anonymous_history[1], num_candidates):
            raise ValueError("the catalog is too small for the requested history and candidate lengths")
        self._kinds = [k for k in KINDS if weights.get(k, 0) > 0]
        self._weights = [weights[k] for k in self._kinds]
        self._users = list(known_users)
        self._items = list(item_ids)
        self._item_weights = [max(popularity.get(i, 0.0), 0.0) + 1.0 for i in self._items] if popularity else None
        self._query_share = query_share
        self._rng = random.Random(seed)
        self._item_rng = random.Random(seed if item_seed is None else item_seed)
        self._history_len = anonymous_history
        self._num_candidates = num_candidates

    def _sample_items(self, n: int) -> tuple[str, ...]:
        if self._item_weights is None:
            return tuple(self._item_rng.sample(self._items, n))
        chosen: dict[str, None] = {}
        while len(chosen) < n:  # weighted draws without replacement
            for item in self._item_rng.choices(self._items, self._item_weights, k=n - len(chosen)):
                chosen.setdefault(item, None)
        return tuple(chosen)

    def draw(self) -> RequestSpec:
        """One request."""
        kind = self._rng.choices(self._kinds, self._weights)[0]
        query = self._rng.choice(QUERIES) if self._rng.random() < self._query_share else ""
        if kind == "known":
            return RequestSpec(kind, user_id=self._rng.choice(self._users), query=query)
        if kind == "anonymous":
            n = self._rng.randint(*self._history_len)
            return RequestSpec(kind, history_item_ids=self._sample_items(n), query=query)
        return RequestSpec(kind, user_id=self._rng.choice(self._users), query=query,
                           candidate_item_ids=self._sample_items(self._num_candidates))

    def take(self, n: int) -> list[RequestSpec]:
        """``n`` requests."""
        return [self.draw() for _ in range(n)]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default).

    Returns NaN for no values.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summarize(values_ms: Sequence[float]) -> dict[str, float | int]:
    """count, mean, p50, p95, p99 and max of latencies in milliseconds (NaN when empty)."""
    return {
        "count": len(values_ms),
        "mean_ms": sum(values_ms) / len(values_ms) if values_ms else math.nan,
        "p50_ms": percentile(values_ms, 50),
        "p95_ms": percentile(values_ms, 95),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": max(values_ms) if values_ms else math.nan,
    }


@dataclass
class CallRecord:
    """The outcome of one call as the bench saw it."""

    label: str
    start_s: float
    latency_ms: float
    code: str = "OK"
    degraded: bool = False
    stages_ms: dict[str, float] = field(default_factory=dict)


def point_summary(records: Sequence[CallRecord], elapsed_s: float) -> dict[str, Any]:
    """Throughput, latency percentiles, errors by code, degraded answers and per-stage latency for one run.

    ``throughput_rps`` counts every OK answer; ``ranked_rps`` only the OK answers that were not degraded (a
    degraded answer skipped a stage, usually the ranker, so it is cheaper and must not pass for throughput).
    """
    ok = [r for r in records if r.code == "OK"]
    ranked = [r for r in ok if not r.degraded]
    stages: dict[str, list[float]] = {}
    for r in ok:
        for stage, ms in r.stages_ms.items():
            stages.setdefault(stage, []).append(ms)
    by_label: dict[str, list[float]] = {}
    for r in ok:
        by_label.setdefault(r.label, []).append(r.latency_ms)
    return {
        "requests": len(records),
        "ok": len(ok),
        "degraded": len(ok) - len(ranked),
        "errors_by_code": dict(Counter(r.code for r in records if r.code != "OK")),
        "elapsed_s": elapsed_s,
        "throughput_rps": len(ok) / elapsed_s if elapsed_s > 0 else math.nan,
        "ranked_rps": len(ranked) / elapsed_s if elapsed_s > 0 else math.nan,
        "latency": summarize([r.latency_ms for r in ok]),
        "ranked_latency": summarize([r.latency_ms for r in ranked]),
        "stages": {stage: summarize(values) for stage, values in sorted(stages.items())},
        "by_kind": {label: summarize(values) for label, values in sorted(by_label.items())},
    }


def _int(value: Any) -> int:
    return int(value or 0)  # Triton's JSON statistics carry uint64 values as strings


@dataclass(frozen=True)
class ModelCounters:
    """Cumulative counters of one model from Triton's statistics API (``get_inference_statistics``)."""

    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    fail_count: int = 0
    queue_ns: int = 0
    queue_count: int = 0
    cache_hit_count: int = 0
    """Requests Triton answered from its response cache (not in ``inference_count``, no execution)."""
    batch_compute_ns: int = 0
    """Sum over executions of the model's ``execute`` time (``batch_stats`` compute_infer)."""
    batch_executions: dict[int, int] = field(default_factory=dict)
    """Executions per executed batch size (``batch_stats``)."""

    @classmethod
    def from_json(cls, stats: Mapping[str, Any]) -> ModelCounters:
        """From one entry of ``model_stats`` (or the whole answer, whose first entry is used)."""
        if "model_stats" in stats:
            entries = stats["model_stats"]
            stats = entries[0] if entries else {}
        inference = stats.get("inference_stats", {})
        batches = {_int(b["batch_size"]): _int(b.get("compute_infer", {}).get("count"))
                   for b in stats.get("batch_stats", [])}
        return cls(
            inference_count=_int(stats.get("inference_count")),
            execution_count=_int(stats.get("execution_count")),
            success_count=_int(inference.get("success", {}).get("count")),
            fail_count=_int(inference.get("fail", {}).get("count")),
            queue_ns=_int(inference.get("queue", {}).get("ns")),
            queue_count=_int(inference.get("queue", {}).get("count")),
            cache_hit_count=_int(inference.get("cache_hit", {}).get("count")),
            batch_compute_ns=sum(_int(b.get("compute_infer", {}).get("ns")) for b in stats.get("batch_stats", [])),
            batch_executions={k: v for k, v in batches.items() if v},
        )


def model_delta(before: ModelCounters, after: ModelCounters) -> dict[str, Any]:
    """What one model did between two snapshots: requests, executions, mean executed batch size, queue time.

    ``requests`` are the inferences the model ran (Triton's ``inference_count``); requests answered from its
    response cache are counted apart (``cache_hits``) and are in neither the batch sizes nor the compute.

    ``queue_ms_mean`` is per request (Triton counts queue time per request); ``compute_ms_per_execution`` is the
    model's ``execute`` time per execution (all the requests of a batch share it). A model that was reloaded
    between the snapshots (its counters restarted) is reported from ``after`` alone.
    """
    if after.inference_count < before.inference_count or after.execution_count < before.execution_count:
        before = ModelCounters()
    requests = after.inference_count - before.inference_count
    cache_hits = after.cache_hit_count - before.cache_hit_count
    executions = after.execution_count - before.execution_count
    queued = after.queue_count - before.queue_count
    per_size = {size: after.batch_executions.get(size, 0) - before.batch_executions.get(size, 0)
                for size in sorted(set(after.batch_executions) | set(before.batch_executions))}
    return {
        "requests": requests,
        "cache_hits": cache_hits,
        "executions": executions,
        "failed": after.fail_count - before.fail_count,
        "mean_batch_size": requests / executions if executions else math.nan,
        "max_batch_size": max((s for s, n in per_size.items() if n > 0), default=0),
        "batch_size_executions": {str(s): n for s, n in per_size.items() if n > 0},
        "queue_ms_mean": (after.queue_ns - before.queue_ns) / queued / 1e6 if queued else math.nan,
        # From batch_stats, which count executions: inference_stats charges every request of a batch the
        # whole batch's compute time.
        "compute_ms_per_execution": ((after.batch_compute_ns - before.batch_compute_ns) / executions / 1e6
                                     if executions else math.nan),
        # The model's cost per request: what batching is meant to bring down.
        "compute_ms_per_request": ((after.batch_compute_ns - before.batch_compute_ns) / requests / 1e6
                                   if requests else math.nan),
    }


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing (NaN) or the denominator is not positive."""
    if denominator is None or numerator is None:
        return math.nan
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


def best_point(points: Iterable[Mapping[str, Any]], key: str = "ranked_rps") -> Mapping[str, Any] | None:
    """The point with the highest ``key`` (ignoring NaN), or None."""
    candidates = [p for p in points if not math.isnan(p.get(key, math.nan))]
    return max(candidates, key=lambda p: p[key], default=None)


def batching_ratios(on: Sequence[Mapping[str, Any]], off: Sequence[Mapping[str, Any]],
                    key: str = "ranked_rps") -> dict[str, float]:
    """Per concurrency, throughput with dynamic batching on divided by off (``{"16": 1.7, ...}``)."""
    off_by_c = {p["concurrency"]: p for p in off}
    return {str(p["concurrency"]): ratio(p[key], off_by_c[p["concurrency"]][key])
            for p in on if p["concurrency"] in off_by_c}


def overhead_ratios(served_ms: Sequence[float], model_ms: Sequence[float]) -> dict[str, float]:
    """Served latency over model-only latency for the same requests: ratio of means and of medians."""
    return {
        "mean": ratio(sum(served_ms) / len(served_ms) if served_ms else math.nan,
                      sum(model_ms) / len(model_ms) if model_ms else math.nan),
        "p50": ratio(percentile(served_ms, 50), percentile(model_ms, 50)),
    }


def jsonable(value: Any) -> Any:
    """Dataclasses to dicts and NaN/inf to None, recursively, so the report is strict JSON."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
