"""The FAISS-structure bench compares every structure on an index's own vectors, the exact scan as the reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.core.index import DOT, write_item_index
from tools.bench import ann_structures


def test_every_structure_is_timed_and_its_recall_measured_against_exact_search(tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    write_item_index(index_dir, [f"i{n}" for n in range(600)], vectors, model_version="1", metric=DOT)
    ann_structures.main(index_dir, k=20, queries=10, out=tmp_path / "report")
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["structure"]: r for r in report["results"]}
    assert report["items"] == 600 and report["dim"] == 8 and len(rows) == 6
    assert rows["exact (IndexFlatIP)"]["recall@20 (items)"] == 1.0
    assert all(0.0 <= r["recall@20 (histories)"] <= 1.0 and r["search_ms_p50"] > 0 for r in rows.values())
    assert "| structure |" in (tmp_path / "report.md").read_text()
