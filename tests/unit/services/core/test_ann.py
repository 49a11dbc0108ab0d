"""The FAISS structure chosen by catalog size: HNSW above the threshold, its recall on record, same answers."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from services.core import ann
from services.core.index import DOT, INDEX_FILE, META_FILE, IndexFormatError, ItemIndex, write_item_index

DIM = 16


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _write(directory: Path, n: int, *, index_type: str = ann.AUTO, ann_min_items: int = ann.ANN_MIN_ITEMS,
           metric: str = "cosine", seed: int = 0) -> tuple[ann.AnnInfo, list[str], np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors = _unit(vectors) if metric == "cosine" else vectors
    ids = [f"i{n}" for n in range(n)]
    counts = [int(c) for c in rng.zipf(1.5, size=n) % 1000]
    directory.mkdir(parents=True, exist_ok=True)
    info = write_item_index(directory, ids, vectors, model_version="1", popularity=counts, index_type=index_type,
                            ann_min_items=ann_min_items, metric=metric)
    return info, ids, vectors, counts


def test_auto_is_exact_below_the_threshold_and_a_graph_from_it() -> None:
    assert ann.resolve_type(ann.AUTO, 99_999) == ann.FLAT
    assert ann.resolve_type(ann.AUTO, 100_000) == ann.HNSW
    assert ann.resolve_type(ann.AUTO, 10, ann_min_items=10) == ann.HNSW
    assert ann.resolve_type(ann.FLAT, 10**7) == ann.FLAT
    with pytest.raises(ValueError, match="index_type"):
        ann.resolve_type("ivf", 10)


def test_a_small_index_stays_format_2_and_flat(tmp_path: Path) -> None:
    info, *_ = _write(tmp_path, 50)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert info.type == ann.FLAT and meta["format_version"] == 2 and "index" not in meta
    assert isinstance(faiss.read_index(str(tmp_path / INDEX_FILE)), faiss.IndexFlatIP)
    assert ItemIndex.load(tmp_path).ann_info == ann.AnnInfo(ann.FLAT)


def test_an_hnsw_index_records_its_recall_and_answers_like_exact_search(tmp_path: Path) -> None:
    info, ids, vectors, counts = _write(tmp_path, 3_000, ann_min_items=1_000)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["format_version"] == 3 and meta["index"]["type"] == "hnsw"
    assert info.recall_at_20 >= 0.97 and info.ef_search in ann.EF_SEARCH_STEPS
    index = ItemIndex.load(tmp_path)
    assert index.ann_info == info and index.dim == DIM and len(index) == 3_000
    # The stored vectors come back without the prior column.
    np.testing.assert_allclose(index.vectors_for(ids[:5]), vectors[:5], atol=1e-6)
    rng = np.random.default_rng(5)
    prior = np.log1p(np.asarray(counts, dtype=np.float32))
    hits = total = 0
    for weight in (0.0, 0.02):
        for q in _unit(rng.normal(size=(30, DIM))):
            exclude = set(ids[:40])
            exact = vectors @ q + weight * prior
            truth = [ids[n] for n in np.argsort(-exact) if ids[n] not in exclude][:20]
            got = index.search(q, 20, exclude, popularity_weight=weight)
            assert len(got) == 20 and not exclude & {i for i, _ in got}
            for item, score in got:  # scores are the exact scores of what was found
                assert score == pytest.approx(float(exact[ids.index(item)]), abs=1e-4)
            hits += len(set(truth) & {i for i, _ in got})
            total += 20
    assert hits / total >= 0.95


def test_a_dot_index_of_raw_vectors_is_searched_through_the_graph_too(tmp_path: Path) -> None:
    info, ids, vectors, _ = _write(tmp_path, 2_000, ann_min_items=1_000, metric=DOT, seed=3)
    index = ItemIndex.load(tmp_path)
    assert index.ann_info.type == ann.HNSW and index.metric == DOT
    np.testing.assert_allclose(index.vectors_for(ids[-3:]), vectors[-3:], atol=1e-6)
    q = np.random.default_rng(9).normal(size=DIM).astype(np.float32)
    truth = [ids[n] for n in np.argsort(-(vectors @ q))[:20]]
    assert len(set(truth) & {i for i, _ in index.search(q, 20)}) >= 18


def test_exact_top_matches_a_flat_search_in_chunks() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(1_000, DIM)).astype(np.float32)
    queries = rng.normal(size=(7, DIM)).astype(np.float32)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(rows)
    _, expected = flat.search(queries, 10)
    got = ann.exact_top(rows, queries, 10, chunk=128)
    assert [set(r) for r in got.tolist()] == [set(r) for r in expected.tolist()]


def test_a_graph_whose_dimension_disagrees_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, 1_200, ann_min_items=1_000)
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["index"]  # now it claims to be flat, without the prior column
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="dim"):
        ItemIndex.load(tmp_path)
    meta["index"] = {"type": "ivf"}
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="ivf"):
        ItemIndex.load(tmp_path)


def test_recall_counts_a_tie_with_the_kth_as_a_hit() -> None:
    rows = np.vstack([np.eye(DIM, dtype=np.float32)[:3], np.eye(DIM, dtype=np.float32)[2:3]])  # rows 2 and 3 tie
    queries = np.eye(DIM, dtype=np.float32)[2:3]
    index = faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)
    index.add(rows)
    truth = np.array([[2]])
    other = np.array([[3]])
    info = ann.AnnInfo(ann.HNSW, 16)
    assert ann.recall_at(index, rows, truth, queries, info) == 1.0 == ann.recall_at(index, rows, other, queries, info)


def test_an_index_that_cannot_reach_the_floor_is_built_exact() -> None:
    vectors = np.random.default_rng(4).normal(size=(400, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    _, info = ann.build(vectors, np.zeros(400), ann.HNSW, ann.AnnSettings(m=2, ef_construction=2, min_recall=1.01))
    assert info.type == ann.FLAT


def test_a_graph_below_the_floor_becomes_a_quantized_scan_that_reaches_it(tmp_path: Path) -> None:
    # Unstructured vectors (random, as an under-trained sequence model's) and a starved graph: HNSW misses the
    # floor, the quantized scan re-scores enough candidates to pass it.
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(4_000, DIM)).astype(np.float32)
    settings = ann.AnnSettings(m=2, ef_construction=4)
    index, info = ann.build(vectors, np.zeros(4_000), ann.HNSW, settings)
    assert info.type == ann.PQ and info.recall_at_20 >= settings.min_recall and info.k_factor in ann.K_FACTOR_STEPS
    assert isinstance(index, faiss.IndexRefine)


def test_a_quantized_scan_answers_like_exact_search_with_exact_scores(tmp_path: Path) -> None:
    info, ids, vectors, counts = _write(tmp_path, 3_000, index_type=ann.PQ, metric=DOT, seed=7)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["index"]["type"] == "pq" and meta["index"]["k_factor"] == info.k_factor
    index = ItemIndex.load(tmp_path)
    assert index.ann_info == info and info.recall_at_20 >= 0.97
    np.testing.assert_allclose(index.vectors_for(ids[:5]), vectors[:5], atol=1e-6)
    rng = np.random.default_rng(8)
    prior = np.log1p(np.asarray(counts, dtype=np.float32))
    hits = total = 0
    for weight in (0.0, 0.05):
        for q in rng.normal(size=(30, DIM)).astype(np.float32):
            exclude = set(ids[:40])
            exact = vectors @ q + weight * prior
            truth = [ids[n] for n in np.argsort(-exact) if ids[n] not in exclude][:20]
            got = index.search(q, 20, exclude, popularity_weight=weight)
            assert len(got) == 20 and not exclude & {i for i, _ in got}
            for item, score in got:
                assert score == pytest.approx(float(exact[ids.index(item)]), abs=1e-4)
            hits += len(set(truth) & {i for i, _ in got})
            total += 20
    assert hits / total >= 0.95


def test_a_quantized_index_whose_metadata_says_otherwise_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, 1_200, index_type=ann.PQ)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["index"]["type"] = "hnsw"
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(IndexFormatError, match="L2"):
        ItemIndex.load(tmp_path)
