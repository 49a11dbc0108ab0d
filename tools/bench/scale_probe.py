"""What `instructrec bench-scale` measures against one running stack (``instructrec run``), whatever its size.

Four kinds of Recommend request, each for distinct known users (ten returned items):

* ``no_query``: the user's stored history only;
* ``query``: a request nobody sent before, from the reading evaluation bank rendered over this catalog (so no
  cache answers it);
* ``filters``: no query, one attribute filter (the catalog's most frequent value of its first categorical
  attribute);
* ``exclude_half``: a request that excludes the catalog's most frequent values of that attribute until about
  half the catalog is excluded ("no running shoes, no socks and no tents"); the share of the catalog the
  served reading actually excluded is measured from the response's applied filters, not assumed.

Each kind runs at concurrency 1 (p50 / p99 of the wall time and of every gateway stage) and at concurrency 8
(throughput). Also: the resident memory of every process of the stack (now and its peak, ``VmHWM``), and the
interaction store's history lookup latency.
"""

from __future__ import annotations

import asyncio
import csv
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from instructrec.v1 import common_pb2
from instructrec.v1 import recommend_service_pb2 as pb
from instructrec.v1 import recommend_service_pb2_grpc as rpc

from services.core.catalog import Catalog
from tools.core.channels import open_tool_channel

KINDS = ("no_query", "query", "filters", "exclude_half")
WARM_UP = 5


@dataclass(frozen=True)
class Workload:
    """The requests of each kind, and what the filters and the exclusion name."""

    requests: dict[str, list[pb.RecommendRequest]]
    filter_value: tuple[str, str]
    excluded_values: tuple[str, ...]
    excluded_share: float
    """Share of the catalog that has one of ``excluded_values`` (what the request asks to exclude)."""
    catalog: Catalog | None = None
    users: tuple[str, ...] = ()
    """The known users the requests are for (the store's lookups are timed on them too)."""


def known_users(train_csv: Path, count: int, seed: int) -> list[str]:
    """``count`` distinct users with a training history, drawn at random."""
    with open(train_csv, newline="", encoding="utf-8") as f:
        users = sorted({row["user_id"] for row in csv.DictReader(f)})
    return random.Random(seed).sample(users, min(count, len(users)))


def categorical_attribute(catalog: Catalog) -> tuple[str, list[tuple[str, int]]]:
    """The first attribute whose values are text, and its values with their item counts, most frequent first."""
    counts: dict[str, Counter] = {}
    for item in catalog:
        for name, value in item.attributes.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if values and all(isinstance(v, str) for v in values):
                counts.setdefault(name, Counter()).update(set(values))
    if not counts:
        raise ValueError("the catalog has no text-valued attribute to filter on")
    name = next(iter(counts))
    return name, counts[name].most_common()


def exclusion(catalog: Catalog, attribute: str, values: Sequence[tuple[str, int]],
              share: float = 0.5, most: int = 6) -> tuple[tuple[str, ...], float]:
    """The most frequent values (at most ``most``) whose items together come closest to ``share`` of the catalog."""
    prefixes = [tuple(v for v, _ in values[:n]) for n in range(1, min(most, len(values)) + 1)]
    shares = {p: _share_with(catalog, attribute, p) for p in prefixes}
    best = min(prefixes, key=lambda p: abs(shares[p] - share))
    return best, shares[best]


def _share_with(catalog: Catalog, attribute: str, values: Sequence[str]) -> float:
    wanted = set(values)
    hits = 0
    for item in catalog:
        value = item.attributes.get(attribute)
        have = set(value) if isinstance(value, (list, tuple)) else {value}
        hits += bool(have & wanted)
    return hits / max(len(catalog), 1)


def _listed(values: Sequence[str]) -> str:
    """"no A, no B and no C": the list form the request reader reads most reliably (each value negated)."""
    negated = [f"no {v}" for v in values]
    return negated[0] if len(negated) == 1 else ", ".join(negated[:-1]) + " and " + negated[-1]


def workload(data_dir: Path, requests: int, seed: int = 0) -> Workload:
    """``requests`` requests of each kind (plus warm-up), each kind for its own users."""
    from tools.bench.query_latency import unseen_requests

    catalog = Catalog.load(data_dir / "items.jsonl")
    attribute, values = categorical_attribute(catalog)
    excluded, share = exclusion(catalog, attribute, values)
    n = requests + WARM_UP
    users = known_users(data_dir / "train.csv", 4 * n, seed)
    texts = unseen_requests(data_dir, n, seed)
    kinds = {kind: users[k * n:(k + 1) * n] for k, kind in enumerate(KINDS)}
    one = common_pb2.AttributeFilter(attribute=attribute, value_set=common_pb2.ValueSet(values=[values[0][0]]))

    def request(user: str, **fields) -> pb.RecommendRequest:
        return pb.RecommendRequest(user_id=user, num_items=10, **fields)

    built = {
        "no_query": [request(u) for u in kinds["no_query"]],
        "query": [request(u, query=t) for u, t in zip(kinds["query"], texts)],
        "filters": [request(u, filters=[one]) for u in kinds["filters"]],
        "exclude_half": [request(u, query=f"{_listed(excluded)} (take {m})")
                         for m, u in enumerate(kinds["exclude_half"])],
    }
    return Workload(built, (attribute, values[0][0]), excluded, round(share, 3), catalog, tuple(users))


async def measure(gateway: str, requests: Sequence[pb.RecommendRequest], concurrency: int,
                  catalog: Catalog | None = None) -> dict:
    """p50 / p99 wall and p50 stage times, answers per second, the share of answers whose applied filters came
    from the query (the reading acted) and, with ``catalog``, the median share of the catalog those filters
    removed, of ``requests`` sent by ``concurrency`` callers."""
    wall: list[float] = []
    stages: dict[str, list[float]] = {}
    applied: list[list[common_pb2.AttributeFilter]] = []
    read = 0
    order = iter(enumerate(requests))
    async with open_tool_channel(gateway) as channel:
        stub = rpc.RecommendServiceStub(channel)

        async def caller() -> None:
            nonlocal read
            for n, request in order:
                started = time.perf_counter()
                response = await stub.Recommend(request, timeout=60)
                if n >= WARM_UP:
                    wall.append((time.perf_counter() - started) * 1e3)
                    read += any(f.source == "query" for f in response.applied_filters)
                    if catalog is not None:  # counted after the clock stops: it scans the catalog
                        applied.append([f.filter for f in response.applied_filters if f.source == "query"])
                    for s in response.stage_timings:
                        stages.setdefault(s.stage, []).append(s.duration_ms)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    removed_by_filters: dict[bytes, float] = {}  # requests repeat their filter sets: each is counted once
    removed = [_removed_share(catalog, filters, removed_by_filters) for filters in applied] if catalog else []
    return {"p50_ms": round(statistics.median(wall), 1), "p99_ms": round(_quantile(wall, 0.99), 1),
            "answers_per_s": round(len(requests) / elapsed, 1), "read_share": round(read / max(len(wall), 1), 3),
            **({"removed_share_p50": round(statistics.median(removed), 3)} if removed else {}),
            "stages_p50_ms": {stage: round(statistics.median(v), 1) for stage, v in stages.items()}}


def _removed_share(catalog: Catalog, filters: Sequence[common_pb2.AttributeFilter], cache: dict[bytes, float]) -> float:
    """Share of ``catalog`` the filters leave out (``cache``: per distinct filter set, for this catalog)."""
    from services.common.filters_proto import filter_from_proto

    key = b"|".join(sorted(f.SerializeToString(deterministic=True) for f in filters))
    if key not in cache:
        parsed = [filter_from_proto(f) for f in filters]
        kept = sum(1 for item in catalog if all(f.allows(item) for f in parsed))
        cache[key] = 1 - kept / max(len(catalog), 1)
    return cache[key]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def process_memory(root_pid: int) -> dict[str, dict[str, float]]:
    """Resident MiB (now and peak) of the stack's processes, by role: triton, each service, the supervisor."""
    root = psutil.Process(root_pid)
    out: dict[str, dict[str, float]] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            role = _role(proc.cmdline(), proc.pid == root_pid)
            rss = proc.memory_info().rss / 2**20
            peak = _peak_mib(proc.pid)
        except (psutil.Error, OSError):
            continue
        if role is None:
            continue
        entry = out.setdefault(role, {"rss_mib": 0.0, "peak_mib": 0.0})
        entry["rss_mib"] = round(max(entry["rss_mib"], rss), 1)
        entry["peak_mib"] = round(max(entry["peak_mib"], peak or rss), 1)
    return out


def _role(cmdline: Sequence[str], is_root: bool) -> str | None:
    text = " ".join(cmdline)
    if is_root:
        return "supervisor"
    if "tritonserver" in text:
        return "triton"
    if "triton_python_backend_stub" in text:  # one per model instance: where the models live
        model = next((Path(a).parent.parent.name for a in cmdline if a.endswith("model.py")), "model")
        return f"triton:{model}"
    for service in ("gateway", "instruction", "retrieval", "ranking"):
        if f"services.{service}" in text:
            return service
    return None


def _peak_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def store_lookup(store_target: str, users: Sequence[str], limit: int = 200) -> dict:
    """p50 / p99 of one user's history read from the interaction store (what every Recommend does)."""
    from services.common.interaction_store import open_store

    async def run() -> list[float]:
        store = open_store(store_target)
        await store.open()
        try:
            times = []
            for user in users:
                started = time.perf_counter()
                await store.history(user, limit)
                times.append((time.perf_counter() - started) * 1e3)
            return times
        finally:
            await store.close()

    times = asyncio.run(run())
    return {"lookups": len(times), "p50_ms": round(statistics.median(times), 3),
            "p99_ms": round(_quantile(times, 0.99), 3)}
