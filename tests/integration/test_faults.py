"""Faults injected into the real stack: Triton killed, a backend process killed, a service restarted.

These tests run their own Triton (they kill it) on the tiny models, and the four services in this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from instructrec.v1 import recommend_service_pb2, recommend_service_pb2_grpc

from services.common.server import ServiceRunner
from services.retrieval.service import RetrievalApp
from tests.integration.conftest import TRITON_MODELS, TRITON_READY_TIMEOUT_S, StartTriton
from tests.integration.stack_helpers import BackgroundCallers, running_stack, stub_pid
from tools.index import build_index_async

pytestmark = pytest.mark.triton
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def own_triton(tiny_model_repository, start_triton: StartTriton):
    with start_triton(tiny_model_repository, TRITON_MODELS, name="own_triton") as server:
        yield server


@pytest.fixture
async def fault_stack(own_triton, dataset, tmp_path):
    index_dir = await build_index_async(dataset / "items.jsonl", dataset / "train.csv", tmp_path / "index",
                                        own_triton.grpc_addr, progress=False)
    overrides = {name: {"triton": {"repair_interval_s": 2.0}} for name in ("ranking", "retrieval", "instruction")}
    async with running_stack(own_triton.grpc_addr, dataset, index_dir, service_overrides=overrides) as s:
        yield s


async def _status(addr: str) -> int:
    async with grpc.aio.insecure_channel(addr) as ch:
        try:
            return (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)).status
        except grpc.aio.AioRpcError:
            return -1


async def _wait_for(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached within {timeout_s} s: {what}")


class Load(BackgroundCallers):
    """Concurrent Recommend callers recording (status, degraded, seconds) until stopped."""

    def __init__(self, addr: str, callers: int = 3, timeout_s: float = 10.0) -> None:
        super().__init__(callers)
        self.addr, self.timeout_s = addr, timeout_s
        self.results: list[tuple[grpc.StatusCode, bool, float]] = []

    async def _caller(self, n: int) -> None:
        async with grpc.aio.insecure_channel(self.addr) as ch:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
            i = 0
            while self.running():
                i += 1
                start = time.perf_counter()
                try:
                    r = await stub.Recommend(
                        recommend_service_pb2.RecommendRequest(user_id=str((n + i) % 12 + 1), query=f"q{i % 3}"),
                        timeout=self.timeout_s,
                    )
                    self.results.append((grpc.StatusCode.OK, r.degraded, time.perf_counter() - start))
                except grpc.aio.AioRpcError as err:
                    self.results.append((err.code(), False, time.perf_counter() - start))
                await asyncio.sleep(0.01)

    def mark(self) -> int:
        return len(self.results)


async def test_triton_killed_under_load_fails_fast_then_recovers_without_restarting_services(fault_stack, own_triton):
    s = fault_stack
    async with Load(s.addr("gateway")) as load:
        await asyncio.sleep(1.5)
        before_kill = load.mark()
        stubs = psutil.Process(own_triton.pid).children(recursive=True)
        os.kill(own_triton.pid, signal.SIGKILL)
        await _wait_for(lambda: _is(s.addr("ranking"), NOT_SERVING), 15, "ranking NOT_SERVING")
        await _wait_for(lambda: _is(s.addr("retrieval"), NOT_SERVING), 15, "retrieval NOT_SERVING")
        await asyncio.sleep(1.0)
        during = load.results[before_kill:]
        own_triton.stop()
        restart = time.monotonic()
        own_triton.start()
        own_triton.wait_ready(timeout_s=TRITON_READY_TIMEOUT_S)
        recovery = await _wait_for(lambda: _is(s.addr("gateway"), SERVING), 60, "gateway SERVING again")
        await _wait_for(lambda: _is(s.addr("ranking"), SERVING), 30, "ranking SERVING again")
        after_recovery = load.mark()
        await asyncio.sleep(2.0)
    # Backend processes normally exit with their server; one that outlived it would hold memory and CPU.
    _, survivors = psutil.wait_procs(stubs, timeout=10)
    for orphan in survivors:
        orphan.kill()
    print(f"\nbackend processes that outlived the killed server: {len(survivors)} (killed by the test)")
    healthy = load.results[:before_kill]
    assert healthy and all(code == grpc.StatusCode.OK and not degraded for code, degraded, _ in healthy)
    codes = Counter(code for code, _, _ in during)
    assert during and set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert max(seconds for _, _, seconds in during) < load.timeout_s  # failed fast: nobody waited out a deadline
    tail = load.results[after_recovery:]
    assert tail and all(code == grpc.StatusCode.OK and not degraded for code, degraded, _ in tail), Counter(tail)
    print(f"\nTriton SIGKILL under load: during the outage {dict(codes)}, "
          f"{sum(d for _, d, _ in during)} degraded, slowest {max(t for _, _, t in during):.2f} s; "
          f"restart -> gateway SERVING {time.monotonic() - restart:.1f} s ({recovery:.1f} s after Triton ready)")


async def _is(addr: str, status: int) -> bool:
    return await _status(addr) == status


async def test_crashed_backend_process_is_repaired_by_the_service(fault_stack, own_triton):
    s = fault_stack
    async with grpc.aio.insecure_channel(s.addr("gateway")) as ch:
        stub = recommend_service_pb2_grpc.RecommendServiceStub(ch)
        assert not (await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id="2"), timeout=30)).degraded
        old_pid = stub_pid(own_triton, "ranker")
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        first = await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id="2"), timeout=30)
        assert first.degraded and "ranker" in first.degraded_reasons[0]  # Triton still says READY; calls fail

        async def ranked() -> bool:
            r = await stub.Recommend(recommend_service_pb2.RecommendRequest(user_id="2"), timeout=30)
            return not r.degraded

        repaired = await _wait_for(ranked, 60, "ranking works again after the repair")
        print(f"\nranker stub killed -> ranking answers again after {repaired + 1.0:.1f} s")
    assert stub_pid(own_triton, "ranker") != old_pid
    await _wait_for(lambda: _is(s.addr("ranking"), SERVING), 5, "ranking SERVING after the repair")


async def test_retrieval_restart_under_load_is_absorbed_by_retries_and_reconnects(fault_stack):
    s = fault_stack
    async with Load(s.addr("gateway"), callers=4, timeout_s=20.0) as load:
        await asyncio.sleep(1.0)
        old = s.runners["retrieval"]
        await old.stop()
        settings = old.settings.model_copy(update={"port": old.port})
        s.runners["retrieval"] = ServiceRunner(settings, RetrievalApp(settings))
        await s.runners["retrieval"].start()
        restarted_at = load.mark()
        await asyncio.sleep(2.0)
    codes = Counter(code for code, _, _ in load.results)
    print(f"\nretrieval restarted under load: {dict(codes)}, slowest {max(t for _, _, t in load.results):.2f} s")
    assert codes == {grpc.StatusCode.OK: len(load.results)}, codes
    assert len(load.results) > restarted_at  # traffic flowed after the restart too
