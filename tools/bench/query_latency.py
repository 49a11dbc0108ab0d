"""Latency of Recommend with a free-text query the text encoder has not seen (Triton's cache cannot answer it).

Concurrency 1, known users 1..N, one distinct query each (evaluation-bank paraphrases made unique by a counter).
Prints the p50 of the gateway's retrieval stage (``stage_timings``) and of the wall time, the first 5 requests
left out as warm-up. Compare two stack settings in the same run, e.g. the intent heads on and off:

    RETRIEVAL_INTENT_WEIGHT=0 instructrec run --no-fill-preferences &   # then:
    python -m tools.bench.query_latency
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import typer
from instructrec.v1 import recommend_service_pb2 as pb
from instructrec.v1 import recommend_service_pb2_grpc as rpc

from tools.core.channels import open_tool_channel
from tools.core.machine import machine
from tools.eval.intentions import EVAL_VAGUE_BANK

WARM_UP = 5


def main(gateway: str = "127.0.0.1:50051", requests: int = typer.Option(60, min=WARM_UP + 1)) -> None:
    print(json.dumps(asyncio.run(measure(gateway, requests))))


async def measure(gateway: str, requests: int) -> dict:
    """p50 wall time and retrieval stage time of ``requests`` sequential Recommend calls with unseen queries."""
    phrases = [p for bank in EVAL_VAGUE_BANK.values() for p in bank]
    wall, retrieval = [], []
    async with open_tool_channel(gateway) as channel:
        stub = rpc.RecommendServiceStub(channel)
        for i in range(requests):
            query = f"{phrases[i % len(phrases)]}, take {i}"
            started = time.perf_counter()
            response = await stub.Recommend(pb.RecommendRequest(user_id=str(1 + i), query=query, num_items=10),
                                            timeout=30)
            wall.append((time.perf_counter() - started) * 1e3)
            retrieval += [s.duration_ms for s in response.stage_timings if s.stage == "retrieval"]
    return {"requests": requests, "wall_p50_ms": round(statistics.median(wall[WARM_UP:]), 1),
            "retrieval_p50_ms": round(statistics.median(retrieval[WARM_UP:]), 1), "machine": machine()}


if __name__ == "__main__":
    typer.run(main)
