"""What `instructrec bench` reports: the run's metadata, headline figures and acceptance checks derived from the
raw sections, the JSON (and PNG) files, and the summary lines the CLI prints."""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from tools.bench.config import BenchConfig
from tools.bench.driver import load_average, machine_info
from tools.bench.stats import KINDS, batching_ratios, best_point, jsonable, overhead_ratios, ratio, summarize


def run_meta(config: BenchConfig, started: dt.datetime) -> dict[str, Any]:
    """The report's ``meta`` at the start of a run: command, machine, configuration, load."""
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(),
        "device": config.device,
        "config": jsonable({k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()}),
        "mix": {k: config.mix.get(k, 0.0) for k in KINDS},
        "load_1m_start": load_average(),
    }


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
        path = report["no_ranker_path"]
        results["no_ranker_p50_ms"] = path["latency"]["p50_ms"]
        for kind in ("without_query", "with_query"):
            if path.get(kind, {}).get("latency", {}).get("count"):
                results[f"no_ranker_{kind}_p50_ms"] = path[kind]["latency"]["p50_ms"]
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
    key = "no_ranker_without_query_p50_ms" if "no_ranker_without_query_p50_ms" in results else "no_ranker_p50_ms"
    if key in results:
        # Issue #14: a request without a query, the path without the ranker (with a query it is recorded).
        value = results[key]
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
        from tools.bench.plot import plot_report

        paths.append(plot_report(report, out.with_suffix(".png")))
    return paths


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
