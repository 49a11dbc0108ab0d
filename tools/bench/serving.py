"""`instructrec bench-serving`: the serving-cost figures of issue #16, each against REF measured in the same run.

REF is one forward pass of the ranker's ONNX version 1 (SmolLM2-135M) over a 480-token prompt at batch 1 with
2 intra-op threads in ONNX Runtime alone: the cost of one of the ranker calls the request path used to make.
Machines differ (AVX-512/VNNI or AVX2 only), so every latency is reported as a multiple of REF and every
throughput as answers per REF. REF is measured before the load phases and again after them; the median of
all its timings is the one used.

Phases, against the running stack (``instructrec run``; statements precomputed, see the report's
``precomputed`` share), known users without a query unless said:

1. **c1**: one caller, ``--c1-requests`` requests: p50 <= 1 REF is the target.
2. **anonymous**: one caller, new random histories (their statements come later): p50 <= 2 REF.
3. **c8**: 8 callers for ``--c8-seconds``: answers/s >= 1.2 / REF, p99 <= 8 REF, 0 failed, degraded <= 5 %.
4. **overload**: 64 callers for ``--overload-seconds`` with a ``--overload-deadline-s`` deadline: every call
   ends (OK, degraded or RESOURCE_EXHAUSTED) within 10 REF, none at its deadline.
5. **recovery**: after ``--recovery-wait-s`` of quiet, c1 again: p50 within 10 % of phase 1.

Also a concurrency sweep (``--sweep``) of known users to show where the knee is, with the load average and the
CPU flags recorded beside every figure. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.core.contracts import ONNX_ATTENTION_MASK, ONNX_INPUT_IDS, ONNX_LABEL_LOGITS, RANKER
from tools.bench.driver import drive, load_average, machine_info
from tools.bench.stats import RequestMix, jsonable, point_summary
from tools.core.channels import open_tool_channel
from tools.core.machine import cpu_flags

log = logging.getLogger("instructrec.bench")

REF_TOKENS = 480
REF_THREADS = 2
REF_VERSION = "1"
@dataclass
class ServingConfig:
    gateway_addr: str = "localhost:50051"
    instruction_addr: str = "localhost:50052"
    data_dir: Path = Path("var/data/movielens-100k")
    repository: Path = Path("model_repository")
    c1_requests: int = 60
    anonymous_requests: int = 30
    c8_seconds: float = 60.0
    overload_callers: int = 64
    overload_seconds: float = 30.0
    overload_deadline_s: float = 30.0
    shed_backoff_s: float = 0.1  # a refused caller waits this long before its next call (as gRPC clients should)
    recovery_wait_s: float = 60.0
    sweep: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    sweep_seconds: float = 15.0
    timeout_s: float = 30.0
    seed: int = 0
    out: Path = Path("var/bench/serving")


def measure_ref(repository: Path, *, repeats: int = 10, warmup: int = 3) -> list[float]:
    """REF timings (ms): the ranker ONNX v1, one 480-token prompt, batch 1, 2 intra-op threads, ONNX Runtime only."""
    import onnxruntime as ort

    path = Path(repository) / RANKER / REF_VERSION / "model.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = REF_THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {ONNX_INPUT_IDS: rng.integers(100, 40_000, size=(1, REF_TOKENS), dtype=np.int64),
             ONNX_ATTENTION_MASK: np.ones((1, REF_TOKENS), dtype=np.int64)}
    for _ in range(warmup):
        session.run([ONNX_LABEL_LOGITS], feeds)
    timings = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run([ONNX_LABEL_LOGITS], feeds)
        timings.append((time.perf_counter() - t0) * 1000)
    return timings


def _phase(records, elapsed_s: float, ref_ms: float) -> dict[str, Any]:
    summary = point_summary(records, elapsed_s)
    lat = summary["latency"]
    summary["load_average"] = load_average()
    if lat.get("count"):
        summary["p50_ref"] = lat["p50_ms"] / ref_ms
        summary["p99_ref"] = lat["p99_ms"] / ref_ms
    summary["answers_per_ref"] = summary["throughput_rps"] * ref_ms / 1000
    all_ms = [r.latency_ms for r in records]
    summary["max_any_ms"] = max(all_ms) if all_ms else 0.0
    return summary


class ServingBench:
    def __init__(self, config: ServingConfig) -> None:
        from services.core.catalog import Catalog, InteractionStore, read_interactions

        self.config = config
        self.catalog = Catalog.load(config.data_dir / "items.jsonl")
        store = InteractionStore.load(config.data_dir / "train.csv")
        self.users = sorted(u for u, h in store.histories.items() if any(i in self.catalog for i in h))
        self.store = store
        counts: dict[str, float] = {}
        for row in read_interactions(config.data_dir / "train.csv"):
            counts[row.item_id] = counts.get(row.item_id, 0.0) + 1.0
        self.popularity = counts

    def mix(self, kind: str, seed: int) -> RequestMix:
        return RequestMix({kind: 1.0}, self.users, list(self.catalog.items), popularity=self.popularity,
                          query_share=0.0, seed=seed)

    async def precomputed_share(self, sample: int = 100) -> dict[str, Any]:
        """How many of a sample of known users' instructions come from a precomputed statement."""
        from instructrec.v1 import instruction_service_pb2, instruction_service_pb2_grpc

        rng = random.Random(self.config.seed)
        users = rng.sample(self.users, min(sample, len(self.users)))
        candidates = list(self.catalog.items)[:20]
        hits = 0
        async with open_tool_channel(self.config.instruction_addr) as channel:
            stub = instruction_service_pb2_grpc.InstructionServiceStub(channel)
            for user in users:
                history = [i for i in self.store.history(user) if i in self.catalog]
                r = await stub.GenerateInstruction(instruction_service_pb2.GenerateInstructionRequest(
                    history_item_ids=history, candidate_item_ids=[c for c in candidates if c not in history][:20]),
                    timeout=10)
                hits += r.preference_cached
        return {"sample": len(users), "precomputed": hits, "share": hits / max(len(users), 1)}

    async def run(self) -> dict[str, Any]:
        from instructrec.v1 import recommend_service_pb2_grpc

        c = self.config
        started = dt.datetime.now(dt.UTC)
        report: dict[str, Any] = {"meta": {"started": started.isoformat(), "machine": machine_info(),
                                           "cpu_flags": cpu_flags(), "load_average_start": load_average(),
                                           "config": asdict(c)}}
        ref_before = measure_ref(c.repository)
        ref_ms = statistics.median(ref_before)
        log.info("REF %.1f ms (ranker v1, %d tokens, batch 1, %d threads)", ref_ms, REF_TOKENS, REF_THREADS)
        report["precomputed"] = await self.precomputed_share()
        phases: dict[str, Any] = {}
        async with open_tool_channel(c.gateway_addr) as channel:
            stub = recommend_service_pb2_grpc.RecommendServiceStub(channel)

            async def phase(name: str, kind: str, callers: int, *, seconds: float = 0.0, requests: int = 0,
                            timeout_s: float | None = None, seed: int = 0) -> dict[str, Any]:
                log.info("phase %s: %d callers, %s", name, callers, f"{seconds:.0f} s" if seconds else requests)
                records, elapsed = await drive(stub, self.mix(kind, c.seed + seed), callers, duration_s=seconds,
                                               max_requests=requests, timeout_s=timeout_s or c.timeout_s,
                                               shed_backoff_s=c.shed_backoff_s)
                phases[name] = _phase(records, elapsed, ref_ms)
                if name == "overload":
                    deadline_ms = (timeout_s or c.timeout_s) * 1000
                    phases[name]["at_deadline"] = sum(r.latency_ms >= 0.95 * deadline_ms for r in records)
                    phases[name]["max_any_ref"] = phases[name]["max_any_ms"] / ref_ms
                return phases[name]

            await drive(stub, self.mix("known", 99), 2, duration_s=0, max_requests=20, timeout_s=c.timeout_s)
            await phase("c1", "known", 1, requests=c.c1_requests, seed=1)
            await phase("anonymous", "anonymous", 1, requests=c.anonymous_requests, seed=int(time.time()))
            await phase("c8", "known", 8, seconds=c.c8_seconds, seed=3)
            await phase("overload", "known", c.overload_callers, seconds=c.overload_seconds,
                        timeout_s=c.overload_deadline_s, seed=4)
            log.info("quiet for %.0f s before the recovery phase", c.recovery_wait_s)
            await asyncio.sleep(c.recovery_wait_s)
            await phase("recovery", "known", 1, requests=c.c1_requests, seed=1)
            sweep = []
            for n in c.sweep:
                records, elapsed = await drive(stub, self.mix("known", c.seed + 10 + n), n,
                                               duration_s=c.sweep_seconds, max_requests=0, timeout_s=c.timeout_s,
                                               shed_backoff_s=c.shed_backoff_s)
                point = _phase(records, elapsed, ref_ms)
                point["concurrency"] = n
                sweep.append(point)
        ref_after = measure_ref(c.repository)
        ref_ms_all = statistics.median(ref_before + ref_after)
        report["ref"] = {"ms": ref_ms, "ms_before": ref_before, "ms_after": ref_after,
                         "median_all_ms": ref_ms_all, "tokens": REF_TOKENS, "threads": REF_THREADS,
                         "model": f"{RANKER} v{REF_VERSION} (ONNX Runtime alone)"}
        report["phases"] = phases
        report["sweep"] = sweep
        report["acceptance"] = acceptance(phases, ref_ms)
        from tools.bench.prompt import prompt_parts

        report["prompt_tokens"] = [prompt_parts(c.data_dir, c.repository, num_candidates=n) for n in (20, 10)]
        report["meta"]["load_average_end"] = load_average()
        report["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat()
        return report


def acceptance(phases: dict[str, Any], ref_ms: float) -> list[dict[str, Any]]:
    """Each target of issue #16 with the measured value and whether it holds."""
    c1, anon, c8, over, rec = (phases[k] for k in ("c1", "anonymous", "c8", "overload", "recovery"))
    fails = c8["requests"] - c8["ok"]
    rows = [
        ("c1 p50 <= 1 REF", c1["p50_ref"], c1["p50_ref"] <= 1.0),
        ("c8 answers/s >= 1.2 / REF", c8["answers_per_ref"], c8["answers_per_ref"] >= 1.2),
        ("c8 p99 <= 8 REF", c8["p99_ref"], c8["p99_ref"] <= 8.0),
        ("c8 failed == 0", fails, fails == 0),
        ("c8 degraded <= 5 %", c8["degraded"] / max(c8["ok"], 1), c8["degraded"] <= 0.05 * max(c8["ok"], 1)),
        ("anonymous p50 <= 2 REF", anon["p50_ref"], anon["p50_ref"] <= 2.0),
        ("overload: every call ends within 10 REF", over["max_any_ref"], over["max_any_ref"] <= 10.0),
        ("overload: none at its deadline", over["at_deadline"], over["at_deadline"] == 0),
        ("recovery c1 p50 within 10 % of before", rec["latency"]["p50_ms"] / c1["latency"]["p50_ms"],
         rec["latency"]["p50_ms"] <= 1.1 * c1["latency"]["p50_ms"]),
    ]
    return [{"target": t, "value": v, "holds": bool(ok)} for t, v, ok in rows]


def knee(sweep: Sequence[dict[str, Any]]) -> int | None:
    """The concurrency past which throughput grows by less than 10 % while p50 grows (where queueing starts)."""
    for a, b in zip(sweep, sweep[1:]):
        if b["throughput_rps"] < 1.1 * a["throughput_rps"]:
            return a["concurrency"]
    return None


def markdown(report: dict[str, Any]) -> str:
    ref = report["ref"]["ms"]
    meta = report["meta"]
    lines = [
        f"# Serving cost ({meta['started'][:19]} UTC)", "",
        f"CPU: {meta['machine'].get('cpu_model', '?')}, {meta['machine'].get('cpu_count')} cores, flags "
        f"{' '.join(meta['cpu_flags']) or '-'}; load average {meta['load_average_start']} at the start, "
        f"{meta['load_average_end']} at the end.",
        f"REF = {ref:.1f} ms ({report['ref']['model']}, {report['ref']['tokens']} tokens, batch 1, "
        f"{report['ref']['threads']} threads; after the load phases: "
        f"{statistics.median(report['ref']['ms_after']):.1f} ms).",
        f"Precomputed statements: {report['precomputed']['precomputed']} of {report['precomputed']['sample']} "
        "sampled known users.", "",
        "| phase | requests | OK | degraded | errors | answers/s | p50 ms | p99 ms | max ms | p50 / REF | p99 / REF "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in report["phases"].items():
        lat = p["latency"]
        lines.append(
            f"| {name} | {p['requests']} | {p['ok']} | {p['degraded']} | {p['errors_by_code'] or '-'} | "
            f"{p['throughput_rps']:.2f} | {lat.get('p50_ms', float('nan')):.1f} | "
            f"{lat.get('p99_ms', float('nan')):.1f} | "
            f"{p['max_any_ms']:.0f} | {p.get('p50_ref', float('nan')):.3f} | {p.get('p99_ref', float('nan')):.3f} | "
            f"{p['load_average']} |")
    lines += ["", "| target | measured | holds |", "|---|---|---|"]
    lines += [f"| {a['target']} | {a['value']:.3f} | {'yes' if a['holds'] else '**no**'} |"
              for a in report["acceptance"]]
    lines += ["", "Sweep (known users, no query):", "",
              "| callers | answers/s | p50 ms | p99 ms | shed (RESOURCE_EXHAUSTED) | load |",
              "|---|---|---|---|---|---|"]
    for p in report["sweep"]:
        lines.append(f"| {p['concurrency']} | {p['throughput_rps']:.1f} | {p['latency'].get('p50_ms', 0):.1f} | "
                     f"{p['latency'].get('p99_ms', 0):.1f} | {p['errors_by_code'].get('RESOURCE_EXHAUSTED', 0)} | "
                     f"{p['load_average']} |")
    if report.get("prompt_tokens"):
        lines += ["", "Ranker prompt tokens per part (mean over 200 known users; the ranker is called only when "
                  "RANKING_LM_WEIGHT > 0):", "", "| candidates | total | template | history | statement | candidates |",
                  "|---|---|---|---|---|---|"]
        for p in report["prompt_tokens"]:
            m = p["mean"]
            lines.append(f"| {p['num_candidates']} | {m['total']:.0f} | {m['template']:.0f} | {m['history']:.0f} | "
                         f"{m['statement']:.0f} | {m['candidates']:.0f} |")
    k = knee(report["sweep"])
    lines += ["", f"Knee: throughput stops growing past {k} concurrent callers." if k else "Knee: not reached."]
    return "\n".join(lines) + "\n"


async def run_serving(config: ServingConfig) -> dict[str, Any]:
    report = await ServingBench(config).run()
    config.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(report), indent=2, default=str)
    config.out.with_suffix(".json").write_text(text + "\n", encoding="utf-8")
    config.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    return report

