"""One `instructrec bench` run against a stack that is already up (`instructrec run`), phase by phase.

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
   API (``tools.bench.control``); the original configs are restored however the run ends.
5. **Model-only baseline**: the step-2 inputs through ONNX Runtime in this process (``tools.bench.baseline``),
   at batch size 1 (latency) and at the ranker's max batch size (throughput).

``--device cuda`` switches the models to ``KIND_GPU`` instances (the same override mechanism; the adapters
then use ONNX Runtime's CUDA provider and torch on ``cuda``) and the baseline to the CUDA provider.

Writes ``<out>.json`` (everything, strict JSON) and ``<out>.png`` (latency and throughput against concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from services.common.triton_clients import tool_triton_settings
from services.core import prompts
from services.core.contracts import PREFERENCE_GENERATOR, RANKER, TEXT_ENCODER
from tools.bench.config import MODELS, SERVICES, BenchConfig
from tools.bench.control import TritonControl, apply_settings, is_gpu_config, on_gpu, without_dynamic_batching
from tools.bench.driver import Ticker, call_recommend, drive, load_average
from tools.bench.report import derive_results, run_meta, write_report
from tools.bench.stats import QUERIES, CallRecord, RequestMix, RequestSpec, model_delta, point_summary, summarize
from tools.core.channels import open_tool_channel

log = logging.getLogger("instructrec.bench")

# An instruction stage slower than this generated its statement on the path (a cached one takes ~2 ms).
UNCACHED_INSTRUCTION_MS = 100.0


class Bench:
    """One benchmark run against a running stack (the phases: the module docstring)."""

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
        gateway's ``fuse_retrieval_scores`` is off, ``BenchConfig.fuse_retrieval_scores``)."""
        if spec.candidate_item_ids and not self.config.fuse_retrieval_scores:
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
        before = await triton.snapshot([TEXT_ENCODER])
        t0 = time.perf_counter()
        for spec in mix.take(self.config.overhead_requests):
            record, response = await call_recommend(stub, spec, timeout_s=self.config.request_timeout_s, t0=t0)
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
        after = await triton.snapshot([TEXT_ENCODER])
        # The replay always runs the encoder; a served request whose retrieval text was in Triton's response
        # cache did not (cache_hits says how many), which lowers the served side of the ratio a little.
        return {"load_1m_before": load, "load_1m_after": load_average(), "served": served, "requests": rows,
                TEXT_ENCODER: model_delta(before[TEXT_ENCODER], after[TEXT_ENCODER])}

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
        by_kind: dict[str, list[float]] = {"without_query": [], "with_query": []}
        retrieval_by_kind: dict[str, list[float]] = {"without_query": [], "with_query": []}
        errors: dict[str, int] = {}
        load = load_average()
        before = await triton.snapshot([TEXT_ENCODER])
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
            kind = "with_query" if query else "without_query"
            by_kind[kind].append((t2 - t0) * 1000)
            retrieval_by_kind[kind].append((t1 - t0) * 1000)
            instruction_ms.append((t2 - t1) * 1000)
            cached += written.preference_cached
        after = await triton.snapshot([TEXT_ENCODER])
        return {"load_1m": load, "latency": summarize(totals), "stalls_over_400ms": sum(ms > 400 for ms in totals),
                "retrieval": summarize(retrieval_ms),
                "instruction": summarize(instruction_ms), "preference_cached": cached, "errors_by_code": errors,
                # A request without a query calls no text encoder (the fitted no-query text weight is 0).
                "without_query": {"latency": summarize(by_kind["without_query"]),
                                  "retrieval": summarize(retrieval_by_kind["without_query"])},
                "with_query": {"latency": summarize(by_kind["with_query"]),
                               "retrieval": summarize(retrieval_by_kind["with_query"])},
                "requests_with_query": sum(1 for _, q in requests if q),
                TEXT_ENCODER: model_delta(before[TEXT_ENCODER], after[TEXT_ENCODER])}

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
            await triton.infer_text(TEXT_ENCODER, text)
            latencies.append((time.perf_counter() - t0) * 1000)
        return {"load_1m": load, "latency": summarize(latencies),
                "stalls_over_400ms": sum(ms > 400 for ms in latencies)}

    async def point(self, concurrency: int, batching: str, seed: int, item_seed: int, ticker: Ticker,
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

    async def sweep(self, batching: str, ticker: Ticker, triton: TritonControl) -> list[dict[str, Any]]:
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
        from tools.bench.baseline import ModelOnly

        model = ModelOnly(self.config.repository, versions, configs, self.config.device)
        items = list(self.catalog)[:2]
        model.warm_up(prompts.retrieval_text("", items[:1]), prompts.format_candidates(items))
        return model

    async def run(self) -> dict[str, Any]:

        c = self.config
        started = dt.datetime.now(dt.UTC)
        addrs = {"gateway": c.gateway_addr, "instruction": c.instruction_addr, "retrieval": c.retrieval_addr,
                 "ranking": c.ranking_addr}
        self._channels = {name: open_tool_channel(addr) for name, addr in addrs.items()}
        triton = TritonControl(tool_triton_settings(c.triton_addr))
        report: dict[str, Any] = self.report
        report["meta"] = run_meta(c, started)
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
            with Ticker(c.progress) as ticker:
                log.info("warm-up: caching %d known users' statements", len(self.known_users))
                report["warmup"] = await self.warm_up(int(configs[PREFERENCE_GENERATOR].get("max_batch_size", 8)))
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
                max_batch = int(configs[RANKER].get("max_batch_size", 8)) or 1
                report["model_only"] = await asyncio.to_thread(baseline.throughput_report, inputs, max_batch)
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


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write its files; returns the report (see the module docstring)."""
    report = await Bench(config).run()
    report["meta"]["files"] = [str(p) for p in write_report(report, config.out, config.plot)]
    return report
