"""Latency of Recommend with a free-text query the text encoder has not seen (Triton's cache cannot answer it).

Concurrency 1, known users 1..N, one distinct query each (evaluation-bank paraphrases made unique by a counter).
Prints the p50 of the gateway's retrieval stage (``stage_timings``) and of the wall time, the first 5 requests
left out as warm-up. Compare two stack settings in the same run, e.g. the intent heads on and off:

    RETRIEVAL_INTENT_WEIGHT=0 instructrec run --no-fill-preferences &   # then:
    python -m tools.bench.query_latency
"""

from __future__ import annotations

import json
import statistics
import time

import grpc
import typer
from instructrec.v1 import recommend_service_pb2 as pb
from instructrec.v1 import recommend_service_pb2_grpc as rpc

from tools.core.machine import machine
from tools.eval.intentions import EVAL_VAGUE_BANK

WARM_UP = 5


def main(gateway: str = "127.0.0.1:50051", requests: int = typer.Option(60, min=WARM_UP + 1)) -> None:
    phrases = [p for bank in EVAL_VAGUE_BANK.values() for p in bank]
    stub = rpc.RecommendServiceStub(grpc.insecure_channel(gateway))
    wall, retrieval = [], []
    for i in range(requests):
        query = f"{phrases[i % len(phrases)]}, take {i}"
        started = time.perf_counter()
        response = stub.Recommend(pb.RecommendRequest(user_id=str(1 + i), query=query, num_items=10), timeout=30)
        wall.append((time.perf_counter() - started) * 1e3)
        retrieval += [s.duration_ms for s in response.stage_timings if s.stage == "retrieval"]
    print(json.dumps({"requests": requests, "wall_p50_ms": round(statistics.median(wall[WARM_UP:]), 1),
                      "retrieval_p50_ms": round(statistics.median(retrieval[WARM_UP:]), 1),
                      "machine": machine()}))


if __name__ == "__main__":
    typer.run(main)
