"""`instructrec bench`: the served path under concurrent load, against the same models run directly.

One run, against a stack that is already up (`instructrec run`):

1. **Warm-up**: the preference statements of a pool of known users are written through the instruction
   service (as a nightly batch would in production), then a few Recommend calls warm every model.
2. **Overhead at concurrency 1**: cached requests (known users, candidate re-ranking) one at a time; their
   instructions and retrieval texts are kept for the model-only baseline.
3. **Path without the ranker**: RetrieveCandidates then GenerateInstruction (statement cached), called directly;
   then ``text_encoder`` on Triton directly with the same kind of texts, back to back.
4. **Sweep**: for each concurrency, N grpc.aio callers drive Recommend over the request mix for a fixed time
   (or number of requests); throughput, latency percentiles, errors by code, degraded answers, per-stage
   latency from the responses' ``stage_timings``, and per Triton model the mean executed batch size, queue and
   compute time from Triton's statistics API (a snapshot before and after each point). With ``--batching
   both`` the sweep runs again with dynamic batching off: a config override through Triton's model-control
   API (``load_model(name, config=...)``); the original configs are restored (unload + load, which drops
   the override) however the run ends.
5. **Model-only baseline**: the step-2 inputs through ONNX Runtime in this process
   (``tools/bench_baseline.py``), at batch size 1 (latency) and at the ranker's max batch size (throughput).

``--device cuda`` switches the models to ``KIND_GPU`` instances (the same override mechanism; the adapters
then use ONNX Runtime's CUDA provider and torch on ``cuda``) and the baseline to the CUDA provider.

Writes ``<out>.json`` (everything, strict JSON) and ``<out>.png`` (latency and throughput against concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from tools.bench_stats import (
    DEFAULT_MIX,
    QUERIES,
    CallRecord,
    ModelCounters,
    RequestMix,
    RequestSpec,
    batching_ratios,
    best_point,
    jsonable,
    model_delta,
    overhead_ratios,
    parse_int_list,
    parse_mix,
    point_summary,
    ratio,
    summarize,
)

log = logging.getLogger("instructrec.bench")

MODELS = ("text_encoder", "ranker", "preference_generator")
# An instruction stage slower than this generated its statement on the path (a cached one takes ~2 ms).
UNCACHED_INSTRUCTION_MS = 100.0
SERVICES = ("gateway", "instruction", "retrieval", "ranking")


@dataclass
class BenchConfig:
    """What to drive and how. Addresses default to `instructrec run`'s ports."""

    gateway_addr: str = "localhost:50051"
    instruction_addr: str = "localhost:50052"
    retrieval_addr: str = "localhost:50053"
    ranking_addr: str = "localhost:50054"
    triton_addr: str = "localhost:8001"
    data_dir: Path = Path("var/data/movielens-100k")
    repository: Path = Path("model_repository")
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    duration_s: float = 30.0
    requests_per_point: int = 0
    """When > 0, each point sends this many requests instead of running for ``duration_s``."""
    batching: str = "both"
    """"on" (the served configs), "off" (dynamic batching removed) or "both" (on, then off)."""
    batching_models: tuple[str, ...] = MODELS
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    """Config overrides for the whole run, per model (``parse_settings``); restored at the end."""
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    query_share: float = 0.5
    warmup_users: int = 32
    warmup_requests: int = 8
    overhead_requests: int = 12
    no_ranker_requests: int = 50
    baseline: bool = True
    device: str = "cpu"
    request_timeout_s: float = 120.0
    seed: int | None = None
    """Seed of the request mix; None picks one from the clock (anonymous histories must be new to the
    instruction service's cache on every run, or their statements would be cached)."""
    out: Path = Path("var/bench/bench")
    plot: bool = True
    progress: bool = True


# --------------------------------------------------------------------------------------------------------
# Triton: statistics and the model-control overrides
# --------------------------------------------------------------------------------------------------------


class TritonControl:
    """Statistics snapshots and reversible config overrides over Triton's gRPC API."""

    def __init__(self, addr: str) -> None:
        import tritonclient.grpc.aio as aioclient

        self._client = aioclient.InferenceServerClient(addr)
        self.overridden: set[str] = set()

    async def close(self) -> None:
        await self._client.close()

    async def config(self, model: str) -> dict[str, Any]:
        return (await self._client.get_model_config(model, as_json=True))["config"]

    async def version(self, model: str) -> str:
        stats = await self._client.get_inference_statistics(model, as_json=True)
        return str(stats["model_stats"][0]["version"])

    async def snapshot(self, models: Sequence[str]) -> dict[str, ModelCounters]:
        return {m: ModelCounters.from_json(await self._client.get_inference_statistics(m, as_json=True))
                for m in models}

    async def infer_text(self, model: str, input_name: str, text: str) -> None:
        """One batch-1 inference with a string input (what the services send)."""
        import numpy as np
        import tritonclient.grpc.aio as aioclient

        tensor = aioclient.InferInput(input_name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
        await self._client.infer(model, [tensor], client_timeout=60)

    async def override(self, model: str, config: dict[str, Any]) -> None:
        """Serve ``model`` with ``config`` (Triton reloads it; the override lasts until :meth:`restore`)."""
        await self._client.load_model(model, config=json.dumps(config))
        self.overridden.add(model)
        await self.wait_ready(model)

    async def restore(self) -> None:
        """Serve every overridden model from its config.pbtxt again (unload + load drops an override)."""
        for model in sorted(self.overridden):
            await self._client.unload_model(model, unload_dependents=False)
            await self._wait_unloaded(model)
            await self._client.load_model(model)
            await self.wait_ready(model)
            self.overridden.discard(model)

    async def _wait_unloaded(self, model: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            index = await self._client.get_model_repository_index(as_json=True)
            states = [m.get("state") for m in index.get("models", []) if m.get("name") == model]
            if not states or all(s != "READY" and s != "UNLOADING" for s in states):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{model} did not unload within {timeout_s:.0f} s")

    async def wait_ready(self, model: str, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await self._client.is_model_ready(model):
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{model} was not ready within {timeout_s:.0f} s")


def without_dynamic_batching(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the dynamic batcher removed: Triton then executes every request on its own."""
    return {k: v for k, v in config.items() if k != "dynamic_batching"}


def on_gpu(config: dict[str, Any], device_id: int = 0) -> dict[str, Any]:
    """The config with its instances on GPU ``device_id`` (``KIND_GPU``), same count as before."""
    count = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
    return {**config, "instance_group": [{"count": count, "kind": "KIND_GPU", "gpus": [device_id]}]}


# --set keys that are config fields rather than model parameters.
CONFIG_KEYS = ("max_queue_delay_us", "preferred_batch_size", "max_batch_size", "instance_count")


def parse_settings(values: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["ranker:num_threads=1", "ranker:max_queue_delay_us=0"]`` -> ``{"ranker": {...}}``.

    Raises:
        ValueError: not ``MODEL:KEY=VALUE``, or an unknown model.
    """
    settings: dict[str, dict[str, str]] = {}
    for value in values:
        model, _, rest = value.partition(":")
        key, eq, setting = rest.partition("=")
        if model not in MODELS or not key or not eq:
            raise ValueError(f"--set takes MODEL:KEY=VALUE with MODEL one of {', '.join(MODELS)}; got {value!r}")
        settings.setdefault(model, {})[key.strip()] = setting.strip()
    return settings


def apply_settings(config: dict[str, Any], settings: dict[str, str]) -> dict[str, Any]:
    """The config with ``settings`` applied: ``CONFIG_KEYS`` to their config fields, any other key as a
    ``parameters`` string value (what the model.py adapters read: num_threads, rows_per_run, ...)."""
    config = json.loads(json.dumps(config))
    for key, value in settings.items():
        if key == "max_queue_delay_us":
            config.setdefault("dynamic_batching", {})["max_queue_delay_microseconds"] = str(int(value))
        elif key == "preferred_batch_size":
            sizes = [int(v) for v in value.replace("/", " ").split()]
            config.setdefault("dynamic_batching", {})["preferred_batch_size"] = sizes
        elif key == "max_batch_size":
            config["max_batch_size"] = int(value)
        elif key == "instance_count":
            for group in config.get("instance_group", []) or [{}]:
                group["count"] = int(value)
        else:
            config.setdefault("parameters", {})[key] = {"string_value": value}
    return config


def is_gpu_config(config: dict[str, Any]) -> bool:
    groups = config.get("instance_group", [])
    return bool(groups) and all(g.get("kind") == "KIND_GPU" for g in groups)


# --------------------------------------------------------------------------------------------------------
# Callers
# --------------------------------------------------------------------------------------------------------


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
                timeout_s: float, on_record: Any = None) -> tuple[list[CallRecord], float]:
    """``concurrency`` closed-loop callers until ``duration_s`` has passed (or ``max_requests`` were sent).

    Calls in flight at the end complete and count; the elapsed time runs to the last completion.
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

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return records, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------


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


class _Ticker:
    """A progress bar per phase (rich), advanced by completed calls."""

    def __init__(self, enabled: bool) -> None:
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                      TimeElapsedColumn(), transient=False)

    def __enter__(self) -> _Ticker:
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


class Bench:
    """One benchmark run against a running stack (see the module docstring for the phases)."""

    def __init__(self, config: BenchConfig) -> None:
        from services.core.catalog import Catalog, InteractionStore, read_interactions

        if config.seed is None:
            config.seed = int(time.time()) % 1_000_000
        self.config = config
        self.catalog = Catalog.load(config.data_dir / "items.jsonl")
        self.store = InteractionStore.load(config.data_dir / "train.csv")
        counts: dict[str, float] = {}
        for row in read_interactions(config.data_dir / "train.csv"):
            counts[row.item_id] = counts.get(row.item_id, 0.0) + 1.0
        self.popularity = counts
        # A fixed pool (not the run's seed): repeated runs against one stack find its statements cached.
        rng = random.Random(0)
        users = sorted(u for u, h in self.store.histories.items() if any(i in self.catalog for i in h))
        self.known_users = rng.sample(users, min(config.warmup_users, len(users)))
        self.report: dict[str, Any] = {}
        self._channels: dict[str, Any] = {}

    # ---- helpers -----------------------------------------------------------------------------------

    def history(self, user_id: str) -> list[str]:
        """A known user's history as the gateway resolves it (catalog items only, oldest first)."""
        return [i for i in self.store.history(user_id) or [] if i in self.catalog]

    def mix(self, seed: int, weights: dict[str, float] | None = None, item_seed: int | None = None) -> RequestMix:
        return RequestMix(weights or self.config.mix, self.known_users, [i.item_id for i in self.catalog],
                          popularity=self.popularity, query_share=self.config.query_share, seed=seed,
                          item_seed=item_seed)

    def encoder_text(self, spec: RequestSpec) -> str | None:
        """The text retrieval encodes for ``spec`` (None when retrieval does not run the encoder). Caller-supplied
        candidates are encoded too: the retrieval service scores them for the ranker's fusion (unless the
        gateway's ``fuse_retrieval_scores`` is off)."""
        from services.core import prompts
        from services.gateway.settings import GatewaySettings

        if spec.candidate_item_ids and not GatewaySettings().fuse_retrieval_scores:
            return None
        ids = list(spec.history_item_ids) or (self.history(spec.user_id) if spec.user_id else [])
        recent = [self.catalog[i] for i in ids if i in self.catalog][-prompts.DEFAULT_MAX_HISTORY_ITEMS:]
        return prompts.retrieval_text(spec.query, recent, prompts.DEFAULT_MAX_HISTORY_ITEMS) or None

    async def _wait_all_serving(self, timeout_s: float = 300.0) -> None:
        from services.common.grpc_client import is_serving

        deadline = time.monotonic() + timeout_s
        pending = list(SERVICES)
        while pending and time.monotonic() < deadline:
            pending = [s for s in pending if not await is_serving(self._channels[s])]
            if pending:
                await asyncio.sleep(0.25)
        if pending:
            raise TimeoutError(f"not SERVING after {timeout_s:.0f} s: {', '.join(pending)}")

    # ---- phases ------------------------------------------------------------------------------------

    async def warm_up(self, generator_batch: int) -> dict[str, Any]:
        """Cache the known users' statements (direct GenerateInstruction calls), then warm every model.

        At most ``generator_batch`` calls are in flight, so each waits for one generator execution at most
        (a longer queue runs into the instruction service's generation timeout on a slow machine); users
        whose statement was not ready in time are asked again, up to three rounds.
        """
        from instructrec.v1 import instruction_service_pb2 as ipb
        from instructrec.v1 import instruction_service_pb2_grpc as irpc
        from instructrec.v1 import recommend_service_pb2_grpc as rpc

        t0 = time.perf_counter()
        stub = irpc.InstructionServiceStub(self._channels["instruction"])
        some_item = next(iter(self.catalog)).item_id
        limit = asyncio.Semaphore(max(generator_batch, 1))
        pending = list(self.known_users)

        async def cached(user: str) -> bool:
            async with limit:
                response = await stub.GenerateInstruction(ipb.GenerateInstructionRequest(
                    history_item_ids=self.history(user), candidate_item_ids=[some_item]), timeout=300)
            return bool(response.preference_statement)

        rounds = 0
        while pending and rounds < 3:
            rounds += 1
            done = await asyncio.gather(*(cached(u) for u in pending))
            pending = [u for u, ok in zip(pending, done) if not ok]
        statements_s = time.perf_counter() - t0
        gateway = rpc.RecommendServiceStub(self._channels["gateway"])
        records, _ = await drive(gateway, self.mix(self.config.seed + 1), min(4, self.config.warmup_requests) or 1,
                                 duration_s=0, max_requests=self.config.warmup_requests,
                                 timeout_s=self.config.request_timeout_s)
        return {"known_users": len(self.known_users), "statements_cached": len(self.known_users) - len(pending),
                "statement_rounds": rounds, "statements_s": statements_s, "recommend_calls": len(records),
                "recommend_errors": sum(r.code != "OK" for r in records), "seconds": time.perf_counter() - t0}

    async def overhead_pass(self, model: Any | None, triton: TritonControl) -> dict[str, Any]:
        """Cached requests at concurrency 1, each followed by the same model inputs through ``model``.

        Pairing every served request with its model-only replay, back to back, keeps slow drifts in the
        machine's other load out of the ratio.
        """
        from instructrec.v1 import recommend_service_pb2_grpc as rpc

        stub = rpc.RecommendServiceStub(self._channels["gateway"])
        mix = self.mix(self.config.seed + 2, {"known": 0.7, "anonymous": 0.0, "candidates": 0.3})
        rows, records = [], []
        load = load_average()
        before = await triton.snapshot(["text_encoder"])
        t0 = time.perf_counter()
        for spec in mix.take(self.config.overhead_requests):
            record, response = await call_recommend(stub, spec, self.config.request_timeout_s, t0)
            records.append(record)
            if response is None or response.degraded or not response.instruction:
                continue
            row = {"label": spec.label, "latency_ms": record.latency_ms, "stages_ms": record.stages_ms,
                   "encoder_text": self.encoder_text(spec), "instruction": response.instruction}
            if record.stages_ms.get("instruction", 0.0) > UNCACHED_INSTRUCTION_MS:
                # The statement was generated on the path (not cached by the warm-up): not comparable with
                # the model-only replay, which runs the encoder and the ranker only.
                row["uncached"] = True
            elif model is not None:
                row["model_only"] = await asyncio.to_thread(model.request_latency, row["encoder_text"],
                                                            row["instruction"])
            rows.append(row)
        served = point_summary(records, time.perf_counter() - t0)
        after = await triton.snapshot(["text_encoder"])
        # The replay always runs the encoder; a served request whose retrieval text was in Triton's response
        # cache did not (cache_hits says how many), which lowers the served side of the ratio a little.
        return {"load_1m_before": load, "load_1m_after": load_average(), "served": served, "requests": rows,
                "text_encoder": model_delta(before["text_encoder"], after["text_encoder"])}

    async def no_ranker_path(self, triton: TritonControl) -> dict[str, Any]:
        """RetrieveCandidates then GenerateInstruction (cached statement), one request at a time, twice.

        The first pass sends ``no_ranker_requests`` requests of known users (with or without a query); the
        second sends the same requests again, as repeat callers would. Each pass records what ``text_encoder``
        did on Triton, including how many texts its response cache answered (``cache_hits``): texts the
        warm-up and overhead phases already encoded can hit in the first pass too.
        """
        rng = random.Random(self.config.seed + 3)
        requests = []
        for _ in range(self.config.no_ranker_requests):
            history = self.history(rng.choice(self.known_users))
            query = rng.choice(QUERIES) if rng.random() < self.config.query_share else ""
            requests.append((history, query))
        first = await self._no_ranker_pass(requests, triton)
        if requests:
            first["repeat"] = await self._no_ranker_pass(requests, triton)
        return first

    async def _no_ranker_pass(self, requests: Sequence[tuple[list[str], str]],
                              triton: TritonControl) -> dict[str, Any]:
        import grpc
        from instructrec.v1 import instruction_service_pb2 as ipb
        from instructrec.v1 import instruction_service_pb2_grpc as irpc
        from instructrec.v1 import retrieval_service_pb2 as rpb
        from instructrec.v1 import retrieval_service_pb2_grpc as rrpc

        retrieval = rrpc.RetrievalServiceStub(self._channels["retrieval"])
        instruction = irpc.InstructionServiceStub(self._channels["instruction"])
        totals, retrieval_ms, instruction_ms, cached = [], [], [], 0
        errors: dict[str, int] = {}
        load = load_average()
        before = await triton.snapshot(["text_encoder"])
        for history, query in requests:
            t0 = time.perf_counter()
            try:
                retrieved = await retrieval.RetrieveCandidates(rpb.RetrieveCandidatesRequest(
                    history_item_ids=history, query=query, num_candidates=20), timeout=30)
                t1 = time.perf_counter()
                written = await instruction.GenerateInstruction(ipb.GenerateInstructionRequest(
                    history_item_ids=history, query=query,
                    candidate_item_ids=[c.item_id for c in retrieved.candidates]), timeout=30)
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] = errors.get(err.code().name, 0) + 1
                continue
            t2 = time.perf_counter()
            totals.append((t2 - t0) * 1000)
            retrieval_ms.append((t1 - t0) * 1000)
            instruction_ms.append((t2 - t1) * 1000)
            cached += written.preference_cached
        after = await triton.snapshot(["text_encoder"])
        return {"load_1m": load, "latency": summarize(totals), "stalls_over_400ms": sum(ms > 400 for ms in totals),
                "retrieval": summarize(retrieval_ms),
                "instruction": summarize(instruction_ms), "preference_cached": cached, "errors_by_code": errors,
                "text_encoder": model_delta(before["text_encoder"], after["text_encoder"])}

    async def encoder_direct(self, triton: TritonControl) -> dict[str, Any]:
        """``text_encoder`` called on Triton directly, back to back, with the retrieval texts of known users.

        Shows what Triton adds to the encoder's compute, and one effect on CPU: with one model instance and
        dynamic batching, a request that arrives just as the previous execution ends now and then waits for
        the dynamic batcher's 500 ms idle timeout (``stalls_over_400ms``).
        """
        rng = random.Random(self.config.seed + 4)
        # A call number at the end makes every text new to Triton's response cache (a few tokens more), so
        # this measures the model, not the cache.
        texts = [f"{self.encoder_text(RequestSpec('known', user_id=rng.choice(self.known_users))) or 'a movie'} #{n}"
                 for n in range(self.config.no_ranker_requests)]
        latencies = []
        load = load_average()
        for text in texts:
            t0 = time.perf_counter()
            await triton.infer_text("text_encoder", "text", text)
            latencies.append((time.perf_counter() - t0) * 1000)
        return {"load_1m": load, "latency": summarize(latencies),
                "stalls_over_400ms": sum(ms > 400 for ms in latencies)}

    async def point(self, concurrency: int, batching: str, seed: int, item_seed: int, ticker: _Ticker,
                    triton: TritonControl) -> dict[str, Any]:
        """One sweep point: callers over the mix, with Triton's counters before and after."""
        from instructrec.v1 import recommend_service_pb2_grpc as rpc

        c = self.config
        stub = rpc.RecommendServiceStub(self._channels["gateway"])
        before = await triton.snapshot(MODELS)
        load_before = load_average()
        total = c.requests_per_point or c.duration_s
        task = ticker.phase(f"batching {batching:3} concurrency {concurrency:3}", total)
        done = {"ok": 0, "other": 0}
        t_start = time.perf_counter()

        def on_record(record: CallRecord) -> None:
            done["ok" if record.code == "OK" else "other"] += 1
            progress = (done["ok"] + done["other"] if c.requests_per_point
                        else min(time.perf_counter() - t_start, c.duration_s))
            ticker.update(task, completed=progress, info=f"{done['ok']} ok, {done['other']} failed")

        records, elapsed = await drive(stub, self.mix(seed, item_seed=item_seed), concurrency, duration_s=c.duration_s,
                                       max_requests=c.requests_per_point, timeout_s=c.request_timeout_s,
                                       on_record=on_record)
        ticker.update(task, completed=total)
        after = await triton.snapshot(MODELS)
        summary = point_summary(records, elapsed)
        return {"concurrency": concurrency, "batching": batching, "load_1m_before": load_before,
                "load_1m_after": load_average(), **summary,
                "triton": {m: model_delta(before[m], after[m]) for m in MODELS}}

    async def sweep(self, batching: str, ticker: _Ticker, triton: TritonControl) -> list[dict[str, Any]]:
        points = []
        for n, concurrency in enumerate(self.config.concurrency):
            # Same request shapes at this concurrency in both modes; other items, so nothing is cached.
            seed = self.config.seed * 1000 + n * 10
            item_seed = seed + (0 if batching == "on" else 1)
            points.append(await self.point(concurrency, batching, seed, item_seed, ticker, triton))
            p = points[-1]
            log.info("batching %s concurrency %d: %.2f ranked req/s, p50 %.0f ms, p99 %.0f ms, %d degraded, errors %s",
                     batching, concurrency, p["ranked_rps"], p["latency"]["p50_ms"], p["latency"]["p99_ms"],
                     p["degraded"], p["errors_by_code"] or "none")
        return points

    def load_model_only(self, versions: dict[str, str], configs: dict[str, dict[str, Any]]) -> Any:
        """The baseline's sessions (blocking: run it in a worker thread), warmed up."""
        from tools.bench_baseline import ModelOnly

        model = ModelOnly(self.config.repository, versions, configs, self.config.device)
        model.warm_up("Recently watched: Toy Story (1995)", "Which movie? Candidates:\nA. Fargo (1996)")
        return model

    def model_only_throughput(self, model: Any, inputs: list[tuple[str | None, str]],
                              max_batch: int) -> dict[str, Any]:
        """The baseline's throughput at batch size 1 and at the ranker's max batch size (blocking)."""
        load = load_average()
        throughput = [model.throughput(inputs, 1)]
        if max_batch > 1:
            throughput.append(model.throughput(inputs, max_batch))
        return {"load_1m_before": load, "load_1m_after": load_average(), "device": model.device,
                "ranker_threads": model.ranker_threads, "encoder_threads": model.encoder_threads,
                "throughput": throughput}

    async def run(self) -> dict[str, Any]:
        import grpc

        from tools.bench_stats import KINDS

        c = self.config
        started = dt.datetime.now(dt.UTC)
        addrs = {"gateway": c.gateway_addr, "instruction": c.instruction_addr, "retrieval": c.retrieval_addr,
                 "ranking": c.ranking_addr}
        self._channels = {name: grpc.aio.insecure_channel(addr) for name, addr in addrs.items()}
        triton = TritonControl(c.triton_addr)
        report: dict[str, Any] = self.report
        report["meta"] = {
            "started_at": started.isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "machine": machine_info(),
            "device": c.device,
            "config": jsonable({k: str(v) if isinstance(v, Path) else v for k, v in vars(c).items()}),
            "mix": {k: c.mix.get(k, 0.0) for k in KINDS},
            "load_1m_start": load_average(),
        }
        try:
            await self._wait_all_serving()
            if c.device == "cuda":
                for model in MODELS:
                    config = await triton.config(model)
                    if not is_gpu_config(config):
                        await triton.override(model, on_gpu(config))
                await self._wait_all_serving()
            for model, settings in c.settings.items():
                await triton.override(model, apply_settings(await triton.config(model), settings))
            if c.settings:
                await self._wait_all_serving()
            report["meta"]["versions"] = {m: await triton.version(m) for m in MODELS}
            configs = {m: await triton.config(m) for m in MODELS}
            report["meta"]["served_configs"] = configs
            baseline = None
            if c.baseline:
                log.info("loading the model-only baseline (%s)", c.device)
                baseline = await asyncio.to_thread(self.load_model_only, report["meta"]["versions"], configs)
            with _Ticker(c.progress) as ticker:
                log.info("warm-up: caching %d known users' statements", len(self.known_users))
                report["warmup"] = await self.warm_up(int(configs["preference_generator"].get("max_batch_size", 8)))
                log.info("overhead pass: %d cached requests at concurrency 1, each replayed model-only",
                         c.overhead_requests)
                report["overhead"] = overhead = await self.overhead_pass(baseline, triton)
                log.info("path without the ranker: %d requests", c.no_ranker_requests)
                report["no_ranker_path"] = await self.no_ranker_path(triton)
                if c.no_ranker_requests:
                    report["encoder_direct"] = await self.encoder_direct(triton)
                sweeps: dict[str, list[dict[str, Any]]] = {}
                modes = ["on", "off"] if c.batching == "both" else [c.batching]
                for mode in modes:
                    if mode == "off":
                        for model in c.batching_models:
                            config = await triton.config(model)
                            await triton.override(model, without_dynamic_batching(config))
                        await self._wait_all_serving()
                        await drive(self._gateway_stub(), self.mix(c.seed + 5), 2, duration_s=0,
                                    max_requests=2, timeout_s=c.request_timeout_s)
                    sweeps[mode] = await self.sweep(mode, ticker, triton)
                report["sweeps"] = sweeps
            await triton.restore()
            await self._wait_all_serving()
            if baseline is not None and overhead["requests"]:
                inputs = [(r["encoder_text"], r["instruction"]) for r in overhead["requests"]]
                log.info("model-only throughput: %d requests in ONNX Runtime (%s)", len(inputs), c.device)
                max_batch = int(configs["ranker"].get("max_batch_size", 8)) or 1
                report["model_only"] = await asyncio.to_thread(self.model_only_throughput, baseline, inputs,
                                                               max_batch)
            report["results"] = derive_results(report)
        finally:
            with contextlib.suppress(Exception):
                await triton.restore()
            await triton.close()
            for channel in self._channels.values():
                await channel.close()
        report["meta"]["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        report["meta"]["load_1m_end"] = load_average()
        return report

    def _gateway_stub(self) -> Any:
        from instructrec.v1 import recommend_service_pb2_grpc as rpc

        return rpc.RecommendServiceStub(self._channels["gateway"])


def derive_results(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and the issue's acceptance checks from a report's raw sections."""
    results: dict[str, Any] = {}
    sweeps = report.get("sweeps", {})
    overhead = report.get("overhead", {})
    paired = [r for r in overhead.get("requests", []) if "model_only" in r]
    results["overhead_uncached_excluded"] = sum(bool(r.get("uncached")) for r in overhead.get("requests", []))
    if paired:
        served = [r["latency_ms"] for r in paired]
        model_ms = [r["model_only"]["total_ms"] for r in paired]
        results["served_c1_ms"] = summarize(served)
        results["model_only_c1_ms"] = summarize(model_ms)
        results["model_only_c1_run_only_ms"] = summarize([r["model_only"]["run_ms"] for r in paired])
        results["overhead_ratio"] = overhead_ratios(served, model_ms)
        results["overhead_ms_mean"] = (sum(served) - sum(model_ms)) / len(paired)
    model_only = report.get("model_only")
    if model_only:
        best_model = max(t["throughput_rps"] for t in model_only["throughput"])
        results["model_only_best_rps"] = best_model
        best = best_point(sweeps.get("on", []))
        if best is not None:
            results["served_best_rps"] = best["ranked_rps"]
            results["served_best_concurrency"] = best["concurrency"]
            results["throughput_ratio"] = ratio(best["ranked_rps"], best_model)
    if "on" in sweeps and "off" in sweeps:
        results["batching_ratio"] = batching_ratios(sweeps["on"], sweeps["off"])
    if report.get("no_ranker_path", {}).get("latency", {}).get("count"):
        results["no_ranker_p50_ms"] = report["no_ranker_path"]["latency"]["p50_ms"]
        repeat = report["no_ranker_path"].get("repeat", {})
        if repeat.get("latency", {}).get("count"):
            # Repeat callers: the encoder's answers come from Triton's response cache. Reported, not the check.
            results["no_ranker_repeat_p50_ms"] = repeat["latency"]["p50_ms"]
    checks = {}
    if "overhead_ratio" in results:
        value = results["overhead_ratio"]["mean"]
        checks["served_c1_within_10pct_of_model_only"] = {"value": value, "pass": value <= 1.10}
    if "batching_ratio" in results and "16" in results["batching_ratio"]:
        value = results["batching_ratio"]["16"]
        checks["batching_on_off_at_c16_at_least_1_5x"] = {"value": value, "pass": value >= 1.5}
    if "no_ranker_p50_ms" in results:
        value = results["no_ranker_p50_ms"]
        checks["no_ranker_path_p50_under_15ms"] = {"value": value, "pass": value < 15.0}
    results["acceptance"] = {k: {"value": v["value"], "pass": bool(v["pass"]) if not math.isnan(v["value"])
                                 else False} for k, v in checks.items()}
    return results


def write_report(report: dict[str, Any], out: Path, plot: bool = True) -> list[Path]:
    """``<out>.json`` and, with ``plot``, ``<out>.png``; returns the paths written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    paths = [json_path]
    if plot and report.get("sweeps"):
        from tools.bench_plot import plot_report

        paths.append(plot_report(report, out.with_suffix(".png")))
    return paths


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write its files; returns the report (see the module docstring)."""
    report = await Bench(config).run()
    report["meta"]["files"] = [str(p) for p in write_report(report, config.out, config.plot)]
    return report


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------


def bench_command(
    concurrency: Annotated[str, typer.Option(help="Comma-separated numbers of concurrent callers, one point each.")]
    = "1,4,16",
    duration: Annotated[float, typer.Option(help="Seconds each point runs (calls in flight then complete).")] = 30.0,
    requests: Annotated[int, typer.Option(help="Requests per point instead of --duration (0: use --duration).")] = 0,
    batching: Annotated[str, typer.Option(
        help="on: the served configs; off: dynamic batching removed through Triton's model control; "
             "both: the sweep with it on, then off (the originals are restored at the end).")] = "both",
    mix: Annotated[str, typer.Option(
        help="Request kinds and weights: known (stored history, statement cached by the warm-up), anonymous "
             "(own history, statement generated on the path), candidates (known user, caller's candidate list).")]
    = "known=0.6,anonymous=0.15,candidates=0.25",
    query_share: Annotated[float, typer.Option(help="Share of requests with a free-text query.")] = 0.5,
    warmup_users: Annotated[int, typer.Option(help="Known users whose statements the warm-up caches.")] = 32,
    warmup_requests: Annotated[int, typer.Option(help="Recommend calls of the mix that warm the models.")] = 8,
    overhead_requests: Annotated[int, typer.Option(
        help="Cached requests at concurrency 1 compared with the model-only baseline.")] = 12,
    no_ranker_requests: Annotated[int, typer.Option(
        help="Requests of the path without the ranker (retrieval + cached instruction).")] = 50,
    baseline: Annotated[bool, typer.Option(help="Run the model-only ONNX Runtime baseline.")] = True,
    plot: Annotated[bool, typer.Option(help="Write the PNG next to the JSON.")] = True,
    device: Annotated[str, typer.Option(
        help="cpu, or cuda: models on KIND_GPU instances (CUDA provider / torch on cuda) and a CUDA baseline.")]
    = "cpu",
    gateway: Annotated[str, typer.Option(help="Gateway host:port.")] = "localhost:50051",
    instruction: Annotated[str, typer.Option(help="Instruction service host:port.")] = "localhost:50052",
    retrieval: Annotated[str, typer.Option(help="Retrieval service host:port.")] = "localhost:50053",
    ranking: Annotated[str, typer.Option(help="Ranking service host:port.")] = "localhost:50054",
    triton: Annotated[str, typer.Option(help="Triton gRPC host:port (statistics, model control).")]
    = "localhost:8001",
    data_dir: Annotated[Path, typer.Option(help="Data set the stack serves (items.jsonl, train.csv).")] = Path(
        "var/data/movielens-100k"),
    repository: Annotated[Path, typer.Option(help="Model repository Triton serves (for the baseline).")] = Path(
        "model_repository"),
    timeout: Annotated[float, typer.Option(help="Deadline of each Recommend call, seconds.")] = 120.0,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", metavar="MODEL:KEY=VALUE",
        help="Config override for this run (restored afterwards); KEY is a model parameter (num_threads, "
             "allow_spinning, rows_per_run, ...) or one of max_queue_delay_us, preferred_batch_size (e.g. 4/8), "
             "max_batch_size, instance_count. Repeatable.")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Random seed of the request mix (default: from the clock, so anonymous histories are new).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output path without suffix (.json and .png are written). Default var/bench/bench-<UTC time>.")]
    = None,
) -> None:
    """Benchmark the running stack: throughput and latency against concurrency, Triton batching, overhead.

    Needs the stack up (`instructrec run`). See docs/performance.md for the figures and how to read them.
    """
    from rich.console import Console

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if batching not in ("on", "off", "both"):
        raise typer.BadParameter("must be on, off or both", param_hint="--batching")
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter("must be cpu or cuda", param_hint="--device")
    try:
        config = BenchConfig(
            gateway_addr=gateway, instruction_addr=instruction, retrieval_addr=retrieval, ranking_addr=ranking,
            triton_addr=triton, data_dir=data_dir, repository=repository,
            concurrency=parse_int_list(concurrency), duration_s=duration, requests_per_point=requests,
            batching=batching, settings=parse_settings(settings or []), mix=parse_mix(mix),
            query_share=query_share, warmup_users=warmup_users, warmup_requests=warmup_requests,
            overhead_requests=overhead_requests, no_ranker_requests=no_ranker_requests, baseline=baseline,
            device=device, request_timeout_s=timeout, seed=seed, plot=plot,
            out=out or Path("var/bench") / f"bench-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}",
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = asyncio.run(run_bench(config))
    console = Console()
    for line in summary_lines(report):
        console.print(line, soft_wrap=True)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The headline figures as text lines (also printed by the CLI)."""
    lines = []
    for mode, points in report.get("sweeps", {}).items():
        for p in points:
            triton = ", ".join(f"{m} batch {d['mean_batch_size']:.2f} queue {d['queue_ms_mean']:.0f} ms"
                               for m, d in p["triton"].items() if d["requests"])
            lines.append(
                f"batching {mode} c={p['concurrency']}: {p['ranked_rps']:.2f} ranked req/s "
                f"({p['throughput_rps']:.2f} OK/s), p50 {p['latency']['p50_ms']:.0f} p95 {p['latency']['p95_ms']:.0f} "
                f"p99 {p['latency']['p99_ms']:.0f} max {p['latency']['max_ms']:.0f} ms, degraded {p['degraded']}, "
                f"errors {p['errors_by_code'] or 'none'}, load {p['load_1m_before']}; {triton}")
    results = report.get("results", {})
    for name, check in results.get("acceptance", {}).items():
        value = check["value"]
        lines.append(f"{name}: {value if value is None else round(value, 3)} -> {'PASS' if check['pass'] else 'MISS'}")
    for path in report.get("meta", {}).get("files", []):
        lines.append(f"wrote {path}")
    return lines


app = typer.Typer(add_completion=False)
app.command()(bench_command)

if __name__ == "__main__":
    app()
