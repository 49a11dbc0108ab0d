"""What each FAISS structure costs per search and finds, on an index's own stored vectors, in this process.

`instructrec bench-scale` times the whole stack; this compares the structures the build can choose from
(``services/core/ann.py``) on one index's vectors, so the choice between them rests on figures anyone can rerun:
the exact scan, scalar quantizers (8-bit, fp16), and the 4-bit PQ fast scan with exact re-scoring at several
``k_factor``s. Queries are stored vectors (sampled) and means of a few of them (a history's), median seconds per
single-query search of ``k`` items, recall@20 against exact search counting ties (:func:`ann.recall_at`):

    python -m tools.bench.ann_structures var/scale/shop-1000000-1000000/workspace/index-sequence \\
        --out docs/performance/ann-structures
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import faiss
import numpy as np
import typer

from services.core import ann
from services.core.index import ItemIndex
from tools.core.machine import machine


def _median_ms(index: faiss.Index, queries: np.ndarray, k: int, params=None) -> float:
    times = []
    for q in queries:
        start = time.perf_counter()
        index.search(q[None], k, params=params)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 2)


def main(index_dir: Path, k: int = 200, queries: int = 50, seed: int = 0,
         out: Path = Path("docs/performance/ann-structures")) -> None:
    stored = ItemIndex.load(index_dir)
    rows = np.ascontiguousarray(stored.vectors_for(stored.item_ids), dtype=np.float32)
    rng = np.random.default_rng(seed)
    items = rows[rng.choice(len(rows), queries, replace=False)]
    histories = np.stack([rows[rng.choice(len(rows), 20)].mean(axis=0) for _ in range(queries)])
    truth = {name: ann.exact_top(rows, q, ann.RECALL_K) for name, q in (("items", items), ("histories", histories))}
    dim = rows.shape[1]
    structures: list[tuple[str, faiss.Index, ann.AnnInfo]] = [("exact (IndexFlatIP)", faiss.IndexFlatIP(dim),
                                                                ann.AnnInfo(ann.FLAT))]
    for name, kind in (("8-bit scalar quantizer", faiss.ScalarQuantizer.QT_8bit),
                       ("fp16 scalar quantizer", faiss.ScalarQuantizer.QT_fp16)):
        structures.append((name, faiss.IndexScalarQuantizer(dim, kind, faiss.METRIC_INNER_PRODUCT),
                           ann.AnnInfo(ann.FLAT)))
    scan = faiss.IndexRefineFlat(faiss.IndexPQFastScan(dim, dim, 4, faiss.METRIC_INNER_PRODUCT))
    structures += [(f"4-bit PQ fast scan + re-score, k_factor {f}", scan, ann.AnnInfo(ann.PQ, k_factor=f))
                   for f in ann.K_FACTOR_STEPS[:3]]
    results = []
    for name, index, info in structures:
        if not index.is_trained:
            index.train(rows[np.sort(rng.choice(len(rows), min(len(rows), ann.PQ_TRAIN_ROWS), replace=False))])
        if index.ntotal == 0:
            index.add(rows)
        row = {"structure": name, "search_ms_p50": _median_ms(index, items, k, ann.search_params(info, k))}
        row.update({f"recall@20 ({q})": round(ann.recall_at(index, rows, truth[q], queries_, info), 3)
                    for q, queries_ in (("items", items), ("histories", histories))})
        results.append(row)
        typer.echo(json.dumps(row))
    command = f"python -m tools.bench.ann_structures {index_dir} --k {k} --queries {queries} --out {out}"
    report = {"command": command, "machine": machine(), "items": len(rows), "dim": dim, "k": k, "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    flags = " ".join(report["machine"]["cpu_flags"])
    lines = [f"# FAISS structures on {len(rows):,} x {dim} stored vectors", "",
             f"Command: `{command}`. Machine: {report['machine']['cpus']} CPUs, flags {flags}. One query at a time, "
             f"k {k}, median of {queries}; recall@20 against exact search, ties counted.", "",
             "| structure | search p50 ms | recall@20 (item queries) | recall@20 (history means) |",
             "|---|---|---|---|"]
    lines += [f"| {r['structure']} | {r['search_ms_p50']} | {r['recall@20 (items)']} | {r['recall@20 (histories)']} |"
              for r in results]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    typer.run(main)
