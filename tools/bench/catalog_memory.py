"""What each structure a service builds from a catalog costs in memory, one after the other in this process.

`instructrec bench-scale` measures whole processes (peak resident memory of each service); this splits a service's
start-up into the structures it loads or builds from a data set (the indexes, the catalog, the attribute postings,
the reading's lexicon and title matcher, the title popularity), so memory work can aim at the largest. Resident
memory after a garbage collection, before and after each step:

    python -m tools.bench.catalog_memory var/scale/shop-100000-300000/workspace --out docs/performance/catalog-memory

A workspace of `instructrec bootstrap` (its ``data``, ``index`` and ``index-sequence``), or ``var`` with
``--data-dir var/data/movielens-100k --index-dir var/index/movielens-100k``.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tools.core.machine import machine


def measure(steps: list[tuple[str, Callable[[], object]]]) -> list[dict]:
    """Run the steps in order, keeping what each returns alive; each step's resident-memory growth and seconds."""
    process, kept, out = psutil.Process(), [], []
    gc.collect()
    before = process.memory_info().rss
    for name, step in steps:
        started = time.perf_counter()
        kept.append(step())
        gc.collect()
        after = process.memory_info().rss
        out.append({"step": name, "mib": round((after - before) / 2**20, 1),
                    "seconds": round(time.perf_counter() - started, 2)})
        before = after
    return out


def main(workspace: Path, data_dir: Path | None = None, index_dir: Path | None = None,
         sequence_index_dir: Path | None = None, out: Path | None = None) -> None:
    """Print (and with ``--out`` save as JSON and Markdown) the memory of each structure built from the data set."""
    from services.core.catalog import Catalog, item_counts
    from services.core.filters import CatalogAttributes
    from services.core.index import ItemIndex
    from services.core.lexicon import Lexicon, TitleMatcher

    data_dir = data_dir or workspace / "data"
    index_dir = index_dir or workspace / "index"
    sequence_index_dir = sequence_index_dir or workspace / "index-sequence"
    state: dict = {}
    synonyms = data_dir / "synonyms.json"
    steps = [
        ("text index (FAISS + ids + popularity)", lambda: ItemIndex.load(index_dir)),
        ("sequence index", lambda: ItemIndex.load(sequence_index_dir) if sequence_index_dir.is_dir() else None),
        ("catalog (items)", lambda: state.setdefault("catalog", Catalog.load(data_dir / "items.jsonl"))),
        ("attribute postings", lambda: CatalogAttributes(state["catalog"])),
        ("lexicon (values, synonyms)", lambda: Lexicon(state["catalog"], json.loads(synonyms.read_text())
                                                       if synonyms.is_file() else None)),
        ("title popularity (streamed)", lambda: state.setdefault("popularity", item_counts(data_dir / "train.csv"))),
        ("title matcher (+ trigram index)", lambda: TitleMatcher(state["catalog"], state["popularity"])),
    ]
    rows = measure(steps)
    report = {"workspace": str(workspace), "items": len(state["catalog"]), "machine": machine(), "steps": rows}
    lines = [f"# Memory of the structures built from a catalog ({report['items']:,} items)", "",
             f"Command: `python -m tools.bench.catalog_memory {workspace}`", "",
             "| structure | resident MiB | seconds |", "|---|---|---|",
             *(f"| {r['step']} | {r['mib']} | {r['seconds']} |" for r in rows)]
    print("\n".join(lines))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import typer

    typer.run(main)
