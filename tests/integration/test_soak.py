"""Soak: the four services as separate processes under steady load for two minutes; memory stays flat.

Marked ``soak`` (run by `make test-soak`, which .ci/run calls too).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter

import grpc
import psutil
import pytest
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from services.common.grpc_client import is_serving
from tests.integration.conftest import ROOT
from tools.index import build_index_async
from tools.runtime.stack import SERVICES, StackConfig, service_env
from tools.runtime.triton_server import free_ports

pytestmark = [pytest.mark.soak, pytest.mark.triton]

LOAD_S = 120.0
WARMUP_S = 20.0
CALLERS = 4
# Allowed growth per process between the first sample after warm-up and the last one.
GROWTH_FRACTION = 0.10
GROWTH_BYTES = 30 * 2**20


@pytest.fixture
async def service_processes(triton_server, dataset, tmp_path):
    spare = free_ports(2 * len(SERVICES))  # all distinct
    config = StackConfig(
        workspace=tmp_path,
        triton_grpc_port=triton_server.grpc_port,
        ports=dict(zip(SERVICES, spare[:len(SERVICES)])),
        metrics_ports=dict(zip(SERVICES, spare[len(SERVICES):])),
        custom_data_dir=dataset,
        log_format="json",
    )
    await build_index_async(dataset / "items.jsonl", dataset / "train.csv", config.index_dir,
                            triton_server.grpc_addr, progress=False)
    procs = {}
    for service in SERVICES:
        env = service_env(config, service)
        env[f"{service.upper()}_TRITON__GRPC_ADDR"] = triton_server.grpc_addr
        procs[service] = subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        addr = f"127.0.0.1:{config.ports['gateway']}"
        async with grpc.aio.insecure_channel(addr) as ch:
            for _ in range(600):
                if await is_serving(ch):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("gateway did not become SERVING")
        yield addr, procs
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=20)


def _rss(pids: dict[str, int]) -> dict[str, int]:
    return {name: psutil.Process(pid).memory_info().rss for name, pid in pids.items()}


async def test_memory_stays_flat_and_nothing_fails_under_steady_load(service_processes, triton_server):
    addr, procs = service_processes
    pids = {name: p.pid for name, p in procs.items()}
    pids["triton"] = triton_server.pid
    for child in psutil.Process(triton_server.pid).children(recursive=True):
        model = next((m for m in ("text_encoder", "ranker", "preference_generator")
                      if any(f"/{m}/" in part for part in child.cmdline())), None)
        if model:
            pids[f"stub:{model}"] = child.pid
    codes: Counter = Counter()
    samples: list[tuple[float, dict[str, int]]] = []
    stop = asyncio.Event()

    async def caller(n: int) -> None:
        async with grpc.aio.insecure_channel(addr) as ch:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
            i = 0
            while not stop.is_set():
                i += 1
                # A rotating mix: known users, anonymous histories (new preference statements), re-ranking.
                kind = i % 3
                request = (
                    recommend_service_pb2.RecommendRequest(user_id=str((n + i) % 12 + 1), query=f"mood {i % 5}")
                    if kind == 0
                    else recommend_service_pb2.RecommendRequest(
                        history_item_ids=[str((n * 13 + i + k) % 80 + 1) for k in range(4)])
                    if kind == 1
                    else recommend_service_pb2.RecommendRequest(
                        user_id="3", candidate_item_ids=[str((i + k) % 80 + 1) for k in range(8)])
                )
                try:
                    await stub.Recommend(request, timeout=30)
                    codes[grpc.StatusCode.OK] += 1
                except grpc.aio.AioRpcError as err:
                    codes[err.code()] += 1

    tasks = [asyncio.create_task(caller(n)) for n in range(CALLERS)]
    start = time.monotonic()
    while time.monotonic() - start < LOAD_S:
        await asyncio.sleep(5.0)
        if time.monotonic() - start >= WARMUP_S:
            samples.append((time.monotonic() - start, _rss(pids)))
    stop.set()
    await asyncio.gather(*tasks)

    first, last = samples[0][1], samples[-1][1]
    print(f"\nsoak {LOAD_S:.0f} s, {CALLERS} callers: {dict(codes)}")
    for name in pids:
        print(f"  {name:28s} rss {first[name] / 2**20:7.1f} MiB -> {last[name] / 2**20:7.1f} MiB")
    assert set(codes) == {grpc.StatusCode.OK}, codes
    for name in pids:
        assert last[name] <= first[name] * (1 + GROWTH_FRACTION) + GROWTH_BYTES, name
