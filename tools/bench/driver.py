"""The callers of `instructrec bench` and what is recorded beside its figures: Recommend calls, closed-loop
drivers, progress bars, machine facts and load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from tools.bench.stats import CallRecord, RequestMix, RequestSpec


def _to_proto(spec: RequestSpec):
    from instructrec.v1 import recommend_service_pb2 as pb

    return pb.RecommendRequest(user_id=spec.user_id, history_item_ids=list(spec.history_item_ids),
                               query=spec.query, candidate_item_ids=list(spec.candidate_item_ids))


async def call_recommend(stub: Any, spec: RequestSpec, timeout_s: float, t0: float) -> tuple[CallRecord, Any]:
    """One Recommend call: its record (latency, code, degraded, stages) and the response (None on error)."""
    import grpc

    start = time.perf_counter()
    try:
        response = await stub.Recommend(_to_proto(spec), timeout=timeout_s)
    except grpc.aio.AioRpcError as err:
        return CallRecord(spec.label, start - t0, (time.perf_counter() - start) * 1000, err.code().name), None
    latency_ms = (time.perf_counter() - start) * 1000
    stages = {t.stage: t.duration_ms for t in response.stage_timings}
    return CallRecord(spec.label, start - t0, latency_ms, "OK", response.degraded, stages), response


async def drive(stub: Any, mix: RequestMix, concurrency: int, *, duration_s: float, max_requests: int,
                timeout_s: float, on_record: Any = None, shed_backoff_s: float = 0.0) -> tuple[list[CallRecord], float]:
    """``concurrency`` closed-loop callers until ``duration_s`` has passed (or ``max_requests`` were sent).

    Calls in flight at the end complete and count; the elapsed time runs to the last completion. A caller
    refused with RESOURCE_EXHAUSTED waits ``shed_backoff_s`` before its next call (a well-behaved client).
    """
    records: list[CallRecord] = []
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    sent = 0

    def more() -> bool:
        return sent < max_requests if max_requests > 0 else time.perf_counter() < deadline

    async def caller() -> None:
        nonlocal sent
        while more():
            sent += 1
            record, _ = await call_recommend(stub, mix.draw(), timeout_s, t0)
            records.append(record)
            if on_record is not None:
                on_record(record)
            if shed_backoff_s > 0 and record.code == "RESOURCE_EXHAUSTED":
                await asyncio.sleep(shed_backoff_s)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return records, time.perf_counter() - t0


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory and GPUs of this machine (where the bench, and usually the stack, runs)."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            info["gpus"] = [g.strip() for g in out.stdout.splitlines() if g.strip()]
    import onnxruntime as ort

    info["onnxruntime_providers"] = ort.get_available_providers()
    return info


def load_average() -> float:
    """The 1-minute load average (other work on the machine skews every figure; it is recorded with each)."""
    return round(os.getloadavg()[0], 2)


class Ticker:
    """A progress bar per phase (rich), advanced by completed calls."""

    def __init__(self, enabled: bool) -> None:
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                      TimeElapsedColumn(), transient=False)

    def __enter__(self) -> Ticker:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def phase(self, description: str, total: float) -> Any:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, info="")

    def update(self, task: Any, **kwargs: Any) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, **kwargs)
