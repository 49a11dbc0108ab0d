"""The report of `instructrec bench-scale`: the issue's JSON shape, a Markdown table with the acceptance ratios, and
one plot of each figure against catalog size."""

from __future__ import annotations

import json
from pathlib import Path

BOUNDS = {"no_query": 2.0, "query": 3.0, "exclude_half": 3.0}
"""The acceptance's bounds at 10^6 items: p50 at concurrency 1 as a multiple of the MovieLens-100K baseline."""
MAX_RSS_MIB = 4096
MAX_READY_S = 180
MIN_RECALL = 0.95


def _p50(entry: dict, kind: str, concurrency: str = "c1") -> float | None:
    return entry.get("kinds", {}).get(kind, {}).get(concurrency, {}).get("p50_ms")


def summarise(report: dict) -> dict:
    """``report`` with the issue's fields added: ``baseline`` and, per size, the p50s, ``max_rss_mib``,
    ``ready_s``, ``index_build_s``, ``recall_at_20_vs_exact`` and the ratios to the baseline."""
    out = dict(report)
    base = report.get("baseline_run")
    if base:
        out["baseline"] = {"items": base["items"], "no_query_p50_ms": _p50(base, "no_query"),
                           "query_p50_ms": _p50(base, "query"), "exclude_half_p50_ms": _p50(base, "exclude_half"),
                           "filters_p50_ms": _p50(base, "filters")}
    sizes = []
    for entry in report.get("sizes", []):
        entry = dict(entry)
        for kind in ("no_query", "query", "filters", "exclude_half"):
            entry[f"{kind}_p50_ms"] = _p50(entry, kind)
        entry["max_rss_mib"] = {role: m["peak_mib"] for role, m in entry.get("memory", {}).items()}
        entry["index_build_s"] = entry.get("steps_s", {}).get("indexes")
        recalls = [i.get("recall_at_20", 1.0) for i in entry.get("indexes", {}).values()]
        entry["recall_at_20_vs_exact"] = min(recalls) if recalls else None
        if base:
            entry["ratio_to_baseline"] = {
                kind: round(entry[f"{kind}_p50_ms"] / out["baseline"][f"{kind}_p50_ms"], 2)
                for kind in BOUNDS if entry.get(f"{kind}_p50_ms") and out["baseline"].get(f"{kind}_p50_ms")}
        sizes.append(entry)
    out["sizes"] = sizes
    return out


def _exclusion(entry: dict) -> dict:
    return entry.get("kinds", {}).get("exclude_half", {}).get("c1", {})


def _cell(kinds: dict, kind: str) -> str:
    c1 = kinds.get(kind, {}).get("c1")
    return f"{c1['p50_ms']} / {c1['p99_ms']} ms" if c1 else "-"


def markdown(report: dict) -> str:
    flags = " ".join(report.get("machine", {}).get("cpu_flags", []))
    lines = ["# Scale: the served stack from 1,682 to 10^6 items", "",
             f"Command: `{report.get('command', 'instructrec bench-scale')}`. Machine: "
             f"{report.get('machine', {}).get('cpus', '?')} CPUs, flags {flags}. p50 / p99 at concurrency 1 "
             "unless said; every stack measured in this one run.", "",
             "| items | users | no query p50 | query p50 | filters p50 | exclude half p50 | c8 answers/s (no query / "
             "query) | ready s | index build s | recall@20 | largest peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = ([("MovieLens-100K", {**report["baseline_run"], "users": 943})] if "baseline_run" in report else [])
    rows += [(f"{e['items']:,}", e) for e in report.get("sizes", [])]
    for label, e in rows:
        kinds = e.get("kinds", {})

        c8 = "/".join(str(kinds.get(k, {}).get("c8", {}).get("answers_per_s", "-")) for k in ("no_query", "query"))
        memory = e.get("memory", {})
        largest = max(memory.items(), key=lambda kv: kv[1]["peak_mib"]) if memory else None
        largest_text = f"{largest[0]} {largest[1]['peak_mib']}" if largest else "-"
        recalls = [i.get("recall_at_20", 1.0) for i in e.get("indexes", {}).values()]
        cells = " | ".join(_cell(kinds, k) for k in ("no_query", "query", "filters", "exclude_half"))
        lines.append(f"| {label} | {e.get('users', '-'):,} | {cells} | {c8} | {e.get('ready_s', '-')} | "
                     f"{e.get('steps_s', {}).get('indexes', '-')} | {min(recalls) if recalls else '-'} | "
                     f"{largest_text} |")
    lines += ["", "Acceptance at 10^6 items (bounds: no query <= 2x, query <= 3x, exclude half <= 3x the baseline's "
              f"p50; no process over {MAX_RSS_MIB} MiB; SERVING within {MAX_READY_S} s; recall@20 >= "
              f"{MIN_RECALL}):", ""]
    for e in ([{**report["baseline_run"], "items": "MovieLens-100K"}] if "baseline_run" in report else []) + \
            report.get("sizes", []):
        items = f"{e['items']:,}" if isinstance(e["items"], int) else e["items"]
        peak = max((m["peak_mib"] for m in e.get("memory", {}).values()), default="-")
        lines.append(f"- {items}: ratios {e.get('ratio_to_baseline', '-')}; max RSS {peak} MiB; ready "
                     f"{e.get('ready_s')} s; "
                     f"recall@20 {e.get('recall_at_20_vs_exact')}; the exclusion asked for "
                     f"{e.get('excluded_share_asked')} of the catalog, the served reading removed "
                     f"{_exclusion(e).get('removed_share_p50', '-')} (median; it acted on "
                     f"{_exclusion(e).get('read_share', '-')} of those requests)")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report.get("sizes", [])
    if not sizes:
        return
    items = [e["items"] for e in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for kind in ("no_query", "query", "filters", "exclude_half"):
        axes[0].plot(items, [e.get(f"{kind}_p50_ms") for e in sizes], marker="o", label=kind)
    axes[0].set(xscale="log", xlabel="catalog items", ylabel="p50 ms (concurrency 1)", title="latency")
    axes[0].legend()
    roles = sorted({r for e in sizes for r in e.get("max_rss_mib", {})})
    for role in roles:
        axes[1].plot(items, [e.get("max_rss_mib", {}).get(role) for e in sizes], marker="o", label=role)
    axes[1].set(xscale="log", xlabel="catalog items", ylabel="peak RSS MiB", title="memory")
    axes[1].legend()
    axes[2].plot(items, [e.get("ready_s") for e in sizes], marker="o", label="ready (s)")
    axes[2].plot(items, [e.get("index_build_s") for e in sizes], marker="o", label="index build (s)")
    axes[2].set(xscale="log", xlabel="catalog items", ylabel="seconds", title="start-up and build")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out: Path) -> dict:
    """``out``.json, ``out``.md and ``out``.png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    plot(report, out.with_suffix(".png"))
    return report
