"""The PNG of `instructrec bench`: latency and throughput against concurrency, batching on and off."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _values(points: list[dict[str, Any]], *keys: str) -> list[float]:
    out = []
    for p in points:
        value: Any = p
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(math.nan if value is None else float(value))
    return out


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Two panels: served latency percentiles and throughput against concurrency, one line style per batching
    mode; the model-only baseline as reference lines where it ran. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"on": "-", "off": "--"}
    for mode, points in report.get("sweeps", {}).items():
        x = [p["concurrency"] for p in points]
        for key, colour in (("p50_ms", "tab:blue"), ("p95_ms", "tab:orange"), ("p99_ms", "tab:red")):
            ax_lat.plot(x, [v / 1000 for v in _values(points, "latency", key)], styles.get(mode, ":"), marker="o",
                        color=colour, label=f"{key[:-3]} batching {mode}")
        ax_thr.plot(x, _values(points, "ranked_rps"), styles.get(mode, ":"), marker="o", color="tab:green",
                    label=f"ranked answers/s, batching {mode}")
        ax_thr.plot(x, _values(points, "throughput_rps"), styles.get(mode, ":"), marker=".", color="tab:gray",
                    label=f"all OK answers/s, batching {mode}")
    results = report.get("results", {})
    if results.get("model_only_c1_ms"):
        ax_lat.axhline(results["model_only_c1_ms"]["p50_ms"] / 1000, color="black", linewidth=0.8,
                       label="model-only p50 (batch 1)")
    model_only = report.get("model_only")
    if model_only:
        best = max(t["throughput_rps"] for t in model_only["throughput"])
        ax_thr.axhline(best, color="black", linewidth=0.8, label="model-only best req/s")
    ticks = sorted({p["concurrency"] for points in report.get("sweeps", {}).values() for p in points})
    for ax in (ax_lat, ax_thr):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrent callers")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_lat.set_ylabel("Recommend latency (s)")
    ax_thr.set_ylabel("requests per second")
    meta = report.get("meta", {})
    machine = meta.get("machine", {})
    fig.suptitle(f"instructrec bench, {meta.get('device', 'cpu')}, {machine.get('cpu_count', '?')} cores "
                 f"{machine.get('cpu_model', '')}, {meta.get('started_at', '')}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
