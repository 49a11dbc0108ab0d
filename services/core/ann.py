"""The FAISS structure behind an item index, chosen by catalog size (issue #31).

Below ``ANN_MIN_ITEMS`` items an index is exact: ``IndexFlatIP`` (a search is one matrix-vector product; at
10^5 x 384 floats that is still a few milliseconds). From there on it is a graph: ``IndexHNSWFlat`` (inner
product), whose search cost grows with log(N) instead of N, and which needs no training pass (IVF would).
Where a graph cannot reach the recall floor, the index is a quantized scan (``pq``): every item is still
scored, but from 4-bit product-quantization codes with FAISS's SIMD fast scan (``IndexPQFastScan``, one
sub-quantizer per dimension or two), and the best ``k_factor * k`` are re-scored exactly from the stored
rows (``IndexRefineFlat``). It reads half a byte per dimension instead of four: on 10^6 x 64 vectors of a
sequence model trained one epoch 3.2 ms instead of 31 ms for the exact scan, at recall@20 0.99 (k_factor 10;
``python -m tools.bench.ann_structures``, docs/performance/ann-structures.md).

An HNSW index stores each vector with two more columns, so that the search with a popularity prior
``q . v_i + w * log(1 + count_i)`` is one nearest-neighbour search and no second, prior-carrying copy of
the vectors is needed (a flat index builds that copy on first use; at 10^6 x 384 floats it would be another
1.5 GB). A graph built on inner products directly is poor at it (the popular items' prior column makes
them everyone's neighbours: recall@20 0.41 at efSearch 1024 on 3,000 items), so the index uses the
standard reduction of maximum inner product search to L2 search: rows ``[v_i, s * p_i, sqrt(M^2 - |v_i|^2 -
(s * p_i)^2)]`` (``p_i = log(1 + count_i)``, ``s`` scales the prior column to at most 1, ``M`` is the largest
norm of the first two parts) all have norm ``M``, and the query ``[q, w / s, 0]``'s nearest rows in L2 are
its largest inner products ``q . v_i + w * p_i``. Scores are recomputed exactly from the found rows.

Its recall is measured when it is built, against exact search over the same vectors, on a sample of the
items' own vectors as queries (``recall_at``); ``efSearch`` is the smallest of ``EF_SEARCH_STEPS`` that
reaches ``target_recall``, and both are written into the index's metadata, so what a served index trades
is on record. Recall counts ties: a found item that scores as high as the exact k-th is as right as the one exact
search happened to list (the k-nearest-neighbour recall of ann-benchmarks, with its small distance tolerance);
catalogs with repeated texts have many (a 10^6-item synthetic shop: 0.941 counted by ids, 0.9995 with ties). A
graph that cannot reach ``min_recall`` at the largest step (vectors with little structure, such as a sequence
model trained for one epoch: recall@20 0.31 on 10^6 items) is not served: the index is built as a quantized
scan instead (its ``k_factor`` chosen the same way from ``K_FACTOR_STEPS``), and exact if that cannot reach
the floor either; the log says which.
Pure domain logic: no gRPC, no Triton.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

import faiss
import numpy as np

log = logging.getLogger(__name__)

FLAT, HNSW, PQ, AUTO = "flat", "hnsw", "pq", "auto"
INDEX_TYPES = (FLAT, HNSW, PQ, AUTO)
ANN_MIN_ITEMS = 100_000
"""From this many items on, ``auto`` builds an HNSW graph; below it an exact flat index."""
EF_SEARCH_STEPS = (64, 128, 256, 512, 1024)
K_FACTOR_STEPS = (2, 5, 10, 20, 50)
"""A quantized scan re-scores ``k_factor * k`` candidates exactly; the build takes the first step that reaches the
target recall."""
PQ_TRAIN_ROWS = 65_536
"""Rows the product quantizer's codebooks are trained on (a sample: training grows with rows x sub-quantizers)."""
RECALL_K = 20
RECALL_QUERIES = 200


@dataclass(frozen=True)
class AnnSettings:
    """How an HNSW graph is built and searched (ignored for a flat index)."""

    m: int = 32
    """Links per node (memory: about 2 x m x 4 bytes per item on the base layer)."""
    ef_construction: int = 80
    target_recall: float = 0.97
    """The build raises efSearch until recall@20 against exact search reaches this (or the last step)."""
    min_recall: float = 0.95
    """A graph below this recall@20 at the last step is replaced by an exact index."""
    seed: int = 0


@dataclass(frozen=True)
class AnnInfo:
    """What was built, recorded in ``items.json`` under ``index``."""

    type: str
    ef_search: int = 0
    m: int = 0
    ef_construction: int = 0
    recall_at_20: float = 1.0
    """Recall@20 against exact search on the build's sample queries (1.0: the index is exact)."""
    prior_scale: float = 1.0
    """``s``: the stored prior column is ``s * log(1 + count)``."""
    k_factor: int = 0
    """A quantized scan re-scores this many times ``k`` candidates exactly (0 for the other types)."""

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v or k in ("type", "recall_at_20")}

    @classmethod
    def from_json(cls, raw: dict | None) -> AnnInfo:
        if not raw:
            return cls(FLAT)
        info = cls(str(raw["type"]), int(raw.get("ef_search", 0)), int(raw.get("m", 0)),
                   int(raw.get("ef_construction", 0)), float(raw.get("recall_at_20", 1.0)),
                   float(raw.get("prior_scale", 1.0)), int(raw.get("k_factor", 0)))
        if info.type not in (FLAT, HNSW, PQ):
            raise ValueError(f"unknown index type {info.type!r}")
        return info

    @property
    def extra_columns(self) -> int:
        """Columns the stored rows carry beyond the item vector (the prior and the norm-completing one)."""
        return 0 if self.type == FLAT else 2


def resolve_type(index_type: str, num_items: int, ann_min_items: int = ANN_MIN_ITEMS) -> str:
    """``auto`` -> ``flat`` or ``hnsw`` by size; an explicit type is kept."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    if index_type != AUTO:
        return index_type
    return HNSW if num_items >= ann_min_items else FLAT


def graph_rows(vectors: np.ndarray, popularity: np.ndarray) -> tuple[np.ndarray, float]:
    """``[v_i, s * p_i, sqrt(M^2 - |v_i|^2 - (s * p_i)^2)]`` rows (float32, contiguous) and ``s``."""
    prior = np.log1p(np.asarray(popularity, dtype=np.float64)).reshape(-1, 1)
    scale = 1.0 / float(prior.max()) if len(prior) and prior.max() > 0 else 1.0
    head = np.hstack([np.asarray(vectors, dtype=np.float64), scale * prior])
    squared = np.einsum("ij,ij->i", head, head)
    rest = np.sqrt(np.maximum(squared.max() - squared, 0.0)).reshape(-1, 1)
    return np.ascontiguousarray(np.hstack([head, rest]), dtype=np.float32), scale


def graph_query(query: np.ndarray, popularity_weight: float, info: AnnInfo) -> np.ndarray:
    """``[q, w / s, 0]`` as a ``[1, dim + 2]`` float32 row."""
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    tail = np.array([[popularity_weight / info.prior_scale, 0.0]], dtype=np.float32)
    return np.ascontiguousarray(np.hstack([q, tail]))


def search_rows(index: faiss.Index, info: AnnInfo, query: np.ndarray, popularity_weight: float,
                fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores [fetch], positions [fetch])`` of the largest ``q . v_i + w * log(1 + count_i)``, best first;
    positions -1 past the end. Scores are exact inner products with the found rows (a graph or a quantized scan)."""
    q = graph_query(query, popularity_weight, info)
    _, positions = index.search(q, fetch, params=search_params(info, fetch))
    found = positions[0][positions[0] >= 0]
    scores = index.reconstruct_batch(found) @ q[0] if len(found) else np.zeros(0, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    out_pos = np.full(fetch, -1, dtype=np.int64)
    out_scores = np.full(fetch, -np.inf, dtype=np.float32)
    out_pos[:len(found)], out_scores[:len(found)] = found[order], scores[order]
    return out_scores, out_pos


def build(vectors: np.ndarray, popularity: np.ndarray, index_type: str,
          settings: AnnSettings = AnnSettings()) -> tuple[faiss.Index, AnnInfo]:
    """The FAISS index over ``vectors`` (already normalised as the metric wants), and what was built.

    ``index_type`` is ``flat``, ``hnsw`` or ``pq`` (resolve ``auto`` first with :func:`resolve_type`); a graph
    below the recall floor becomes a quantized scan, and that one below it an exact index.
    """
    if index_type == FLAT:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index, AnnInfo(FLAT)
    if index_type not in (HNSW, PQ):
        raise ValueError(f"cannot build index type {index_type!r}")
    rows, scale = graph_rows(vectors, popularity)
    queries = _sample_queries(rows, settings.seed)
    truth = exact_top(rows, queries, RECALL_K)
    if index_type == HNSW:
        index, info = _graph(rows, queries, truth, settings)
        if info.recall_at_20 >= settings.min_recall:
            return index, replace(info, prior_scale=scale)
        log.warning("HNSW recall@20 %.4f at efSearch %d is below %.2f on %d items: building a quantized scan instead",
                    info.recall_at_20, info.ef_search, settings.min_recall, len(rows))
    index, info = _scan(rows, queries, truth, settings)
    if info.recall_at_20 >= settings.min_recall:
        return index, replace(info, prior_scale=scale)
    log.warning("quantized-scan recall@20 %.4f at k_factor %d is below %.2f on %d items: building an exact index "
                "instead", info.recall_at_20, info.k_factor, settings.min_recall, len(rows))
    return build(vectors, popularity, FLAT, settings)


def _graph(rows: np.ndarray, queries: np.ndarray, truth: np.ndarray,
           settings: AnnSettings) -> tuple[faiss.Index, AnnInfo]:
    """An HNSW graph over ``rows`` (L2), efSearch raised step by step until the target recall."""
    index = faiss.IndexHNSWFlat(rows.shape[1], settings.m, faiss.METRIC_L2)
    index.hnsw.efConstruction = settings.ef_construction
    index.add(rows)
    info = AnnInfo(HNSW)
    for ef in EF_SEARCH_STEPS:
        info = AnnInfo(HNSW, ef, settings.m, settings.ef_construction)
        info = replace(info, recall_at_20=round(recall_at(index, rows, truth, queries, info), 4))
        if info.recall_at_20 >= settings.target_recall:
            break
    return index, info


def _scan(rows: np.ndarray, queries: np.ndarray, truth: np.ndarray,
          settings: AnnSettings) -> tuple[faiss.Index, AnnInfo]:
    """A 4-bit product-quantized fast scan of ``rows`` (inner product) with exact re-scoring, ``k_factor`` raised step
    by step until the target recall."""
    dim = rows.shape[1]
    sub = 2 if dim > 128 and dim % 2 == 0 else 1  # dimensions per sub-quantizer
    index = faiss.IndexRefineFlat(faiss.IndexPQFastScan(dim, dim // sub, 4, faiss.METRIC_INNER_PRODUCT))
    rng = np.random.default_rng(settings.seed)
    sample = rows if len(rows) <= PQ_TRAIN_ROWS else rows[np.sort(rng.choice(len(rows), PQ_TRAIN_ROWS, replace=False))]
    index.train(sample)
    index.add(rows)
    info = AnnInfo(PQ)
    for k_factor in K_FACTOR_STEPS:
        info = AnnInfo(PQ, k_factor=k_factor)
        info = replace(info, recall_at_20=round(recall_at(index, rows, truth, queries, info), 4))
        if info.recall_at_20 >= settings.target_recall:
            break
    return index, info


def _sample_queries(rows: np.ndarray, seed: int) -> np.ndarray:
    """Items' own vectors (no prior: ``[v, 0, 0]``) as stand-ins for queries in the same space."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rows), size=min(RECALL_QUERIES, len(rows)), replace=False)
    queries = rows[picks].copy()
    queries[:, -2:] = 0.0
    return queries


def search_params(info: AnnInfo, fetch: int) -> faiss.SearchParameters | None:
    """Per-search parameters: an HNSW search explores at least ``fetch`` candidates; a quantized scan re-scores
    ``k_factor * fetch``."""
    if info.type == PQ:
        return faiss.IndexRefineSearchParameters(k_factor=float(max(info.k_factor, 1)))
    if info.type != HNSW:
        return None
    params = faiss.SearchParametersHNSW()
    params.efSearch = max(info.ef_search, fetch)
    return params


def exact_top(rows: np.ndarray, queries: np.ndarray, k: int, chunk: int = 200_000) -> np.ndarray:
    """Positions of each query's exact top ``k`` rows by inner product ``[Q, k]`` (in chunks of rows: no copy);
    for graph rows and queries ``[q, w / s, 0]`` that is the prior-weighted score."""
    k = min(k, len(rows))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        scores = queries @ rows[start:start + chunk].T  # [Q, chunk]
        scores = np.hstack([best_scores, scores])
        positions = np.hstack([best, np.arange(start, start + scores.shape[1] - best.shape[1])[None, :]
                               .repeat(len(queries), 0)])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, top, 1)
        best = np.take_along_axis(positions, top, 1)
    return best


TIE_TOLERANCE = 1e-5
"""Scores this close to the exact k-th count as ties (float32 rounding)."""


def recall_at(index: faiss.Index, rows: np.ndarray, truth: np.ndarray, queries: np.ndarray, info: AnnInfo) -> float:
    """Share of the k rows ``index`` returns per query that score at least the exact k-th (``truth``, from
    :func:`exact_top`, over ``rows``): recall@k counting ties as hits."""
    k = truth.shape[1] if truth.ndim == 2 else 0
    if not len(queries) or k <= 0:
        return 1.0
    kth = np.einsum("qd,qkd->qk", queries, rows[truth]).min(axis=1, keepdims=True)
    _, found = index.search(queries, k, params=search_params(info, k))
    scores = np.einsum("qd,qkd->qk", queries, rows[np.maximum(found, 0)])
    hits = (found >= 0) & (scores >= kth - TIE_TOLERANCE * np.maximum(1.0, np.abs(kth)))
    return float(hits.sum()) / (len(queries) * k)
