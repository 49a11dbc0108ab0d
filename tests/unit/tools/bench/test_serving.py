"""The serving-cost report: targets against REF, the knee, the markdown (no server needed)."""

from tools.bench.serving import acceptance, knee, markdown


def _phase(p50: float, p99: float, rps: float, ref: float, *, ok: int = 100, requests: int = 100, degraded: int = 0,
           max_ms: float | None = None, at_deadline: int = 0) -> dict:
    return {"requests": requests, "ok": ok, "degraded": degraded, "errors_by_code": {}, "throughput_rps": rps,
            "latency": {"p50_ms": p50, "p99_ms": p99, "count": ok}, "p50_ref": p50 / ref, "p99_ref": p99 / ref,
            "answers_per_ref": rps * ref / 1000, "max_any_ms": max_ms or p99, "max_any_ref": (max_ms or p99) / ref,
            "at_deadline": at_deadline, "load_average": 1.0}


def test_targets_are_judged_against_ref():
    ref = 400.0
    phases = {"c1": _phase(20, 40, 40, ref), "anonymous": _phase(30, 60, 30, ref), "c8": _phase(100, 300, 60, ref),
              "overload": _phase(500, 1500, 60, ref, max_ms=3000), "recovery": _phase(21, 40, 40, ref)}
    rows = {r["target"]: r for r in acceptance(phases, ref)}
    assert all(r["holds"] for r in rows.values())
    phases["c8"] = _phase(100, 4000, 2, ref, ok=98)  # 0.8 answers per REF, p99 10 REF, 2 failed
    phases["overload"] = _phase(500, 1500, 60, ref, max_ms=30_000, at_deadline=3)
    phases["recovery"] = _phase(30, 40, 40, ref)
    failing = {r["target"] for r in acceptance(phases, ref) if not r["holds"]}
    assert failing == {"c8 answers/s >= 1.2 / REF", "c8 p99 <= 8 REF", "c8 failed == 0",
                       "overload: every call ends within 10 REF", "overload: none at its deadline",
                       "recovery c1 p50 within 10 % of before"}


def test_the_knee_is_where_throughput_stops_growing():
    sweep = [{"concurrency": n, "throughput_rps": rps} for n, rps in ((1, 40), (2, 70), (4, 75), (8, 76))]
    assert knee(sweep) == 2
    assert knee(sweep[:2]) is None


def test_the_markdown_names_ref_the_cpu_and_every_phase():
    ref = 400.0
    phases = {k: _phase(20, 40, 40, ref) for k in ("c1", "anonymous", "c8", "overload", "recovery")}
    report = {"meta": {"started": "2026-12-02T04:00:00", "machine": {"cpu_model": "EPYC", "cpu_count": 2},
                       "cpu_flags": ["avx2", "avx512_vnni"], "load_average_start": 1.0, "load_average_end": 2.0},
              "ref": {"ms": ref, "ms_after": [410.0], "model": "ranker v1", "tokens": 480, "threads": 2},
              "precomputed": {"precomputed": 99, "sample": 100}, "phases": phases,
              "acceptance": acceptance(phases, ref),
              "sweep": [{"concurrency": 1, "throughput_rps": 40, "latency": {"p50_ms": 20, "p99_ms": 40},
                         "errors_by_code": {}, "load_average": 1.0}]}
    text = markdown(report)
    assert "REF = 400.0 ms" in text and "avx512_vnni" in text and "| overload |" in text and "99 of 100" in text
