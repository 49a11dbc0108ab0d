"""Latency and throughput of Recommend with free-text queries nobody sent before (no cache can answer them).

Known users 1..N, one distinct query each: hand-written-style requests from the reading evaluation bank
(``tools/eval/reading_bank.py``, rendered over the catalog and made unique by a counter), or no query at all
(``--no-query``). Concurrency 1 gives the p50 of the wall time and of each gateway stage (``stage_timings``);
concurrency 8 gives the throughput too. The first requests of each run are warm-up. Compare two stack settings on
the same machine in one session, e.g. reading on and off:

    GATEWAY_READ_QUERIES=false instructrec run --no-fill-preferences &   # then:
    python -m tools.bench.query_latency --concurrency 1 --concurrency 8
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import typer
from instructrec.v1 import recommend_service_pb2 as pb
from instructrec.v1 import recommend_service_pb2_grpc as rpc

from tools.core.channels import open_tool_channel
from tools.core.machine import machine

WARM_UP = 5


def main(gateway: str = "127.0.0.1:50051", requests: int = typer.Option(200, min=WARM_UP + 1),
         concurrency: list[int] = typer.Option([1], help="Callers in flight; repeat for several runs."),
         no_query: bool = typer.Option(False, help="Requests without a query (a known user's history only)."),
         data_dir: Path = Path("var/data/movielens-100k"), seed: int = 0) -> None:
    # Each run gets requests of its own: a request seen by an earlier run would be answered from the caches.
    runs = {c: asyncio.run(measure(gateway, [""] * requests if no_query else
                                   unseen_requests(data_dir, requests, seed + 1000 * n), c))
            for n, c in enumerate(concurrency)}
    print(json.dumps({"requests": requests, "no_query": no_query, "runs": runs, "machine": machine()}))


def unseen_requests(data_dir: Path, count: int, seed: int) -> list[str]:
    """``count`` distinct requests from the reading evaluation bank, each made unique by a counter."""
    from tools.core.reading_examples import Renderer, generate, load_vocabulary
    from tools.eval.reading_bank import EVALUATION_BANK

    examples = generate(Renderer(load_vocabulary(data_dir), EVALUATION_BANK, "eval"), count, seed + 99)
    return [f"{e.text} (take {n})" for n, e in enumerate(examples)]


async def measure(gateway: str, queries: list[str], concurrency: int) -> dict:
    """p50 wall and stage times, and requests per second, of the queries sent by ``concurrency`` callers."""
    wall: list[float] = []
    stages: dict[str, list[float]] = {}
    order = iter(enumerate(queries))
    async with open_tool_channel(gateway) as channel:
        stub = rpc.RecommendServiceStub(channel)

        async def caller() -> None:
            for n, query in order:
                started = time.perf_counter()
                response = await stub.Recommend(pb.RecommendRequest(user_id=str(1 + n % 943), query=query,
                                                                    num_items=10), timeout=30)
                if n >= WARM_UP:
                    wall.append((time.perf_counter() - started) * 1e3)
                    for s in response.stage_timings:
                        stages.setdefault(s.stage, []).append(s.duration_ms)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"wall_p50_ms": round(statistics.median(wall), 1),
            "wall_p99_ms": round(sorted(wall)[int(0.99 * (len(wall) - 1))], 1),
            "requests_per_s": round(len(queries) / elapsed, 1),
            **{f"{stage}_p50_ms": round(statistics.median(v), 1) for stage, v in stages.items()}}


if __name__ == "__main__":
    typer.run(main)
