"""The item index: FAISS inner-product search over item vectors of one served model, plus popularity.

Pure domain logic (no gRPC, no Triton), shared by the retrieval service (reads) and ``tools/index.py``
(writes), so the on-disk format is defined in one place:

* ``items.faiss``: a ``faiss.IndexFlatIP``, or from ``ANN_MIN_ITEMS`` items on an ``IndexHNSWFlat`` (or, where a
  graph misses the recall floor, a quantized scan ``IndexRefineFlat(IndexPQFastScan)``) whose rows carry the
  popularity prior and a norm-completing column (``services/core/ann.py``); row ``i`` is ``item_ids[i]``.
* ``items.json``: ``format_version``, ``item_ids`` (index order), ``model_name`` and ``model_version`` (the
  Triton model and version that produced the vectors; a query vector must come from the same pair),
  ``metric`` (``cosine``: vectors L2-normalised, the text encoder; ``dot``: raw inner products, the sequence
  model's logits), ``dim``, ``num_items``, ``popularity`` (training interaction count per item, aligned with
  ``item_ids``), ``built_at`` (ISO 8601, UTC); format 3 adds ``index`` (type, efSearch, recall@20 against exact
  search; written only for an HNSW or quantized index, so a flat one is still format 2). Format 1 (text encoder only,
  ``text_encoder_version``) is still read.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from services.core import ann
from services.core.contracts import TEXT_ENCODER

INDEX_FILE = "items.faiss"
META_FILE = "items.json"
FORMAT_VERSION = 2
ANN_FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
COSINE = "cosine"
DOT = "dot"
METRICS = (COSINE, DOT)

# Below this norm a combined vector has no direction worth searching with.
_MIN_NORM = 1e-6


class IndexFormatError(Exception):
    """The index folder is missing, unreadable, inconsistent, or incompatible with the serving encoder."""


class UnknownItemError(KeyError):
    """Item ids that are not in the index."""

    def __init__(self, item_ids: Sequence[str]):
        super().__init__(f"{len(item_ids)} item ids not in the index: {list(item_ids)[:5]}")
        self.item_ids = list(item_ids)

    def __str__(self) -> str:
        return self.args[0]


def _normalise(v: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(v))
    return None if norm < _MIN_NORM else (v / norm).astype(np.float32)


def user_vector(
    query_embedding: np.ndarray | None,
    history_vectors: np.ndarray | None,
    history_weight: float,
) -> np.ndarray | None:
    """The retrieval query for a request: the encoded request text blended with the user's history.

    ``v = normalise((1 - w) * normalise(q) + w * normalise(mean(h)))`` with ``w = history_weight``. Each
    side is normalised before blending so that ``w`` means the same thing whatever the history length
    (the mean of many diverse vectors is short). The caller chooses which history items to pass (the
    recent ones). With only one side present, that side is returned normalised; with neither, None (the
    caller falls back to popularity). If the blend cancels out (opposite directions), the query wins,
    because it is what the caller asked for now.

    Args:
        query_embedding: ``[dim]`` (or ``[1, dim]``) embedding of the request text, or None.
        history_vectors: ``[n, dim]`` item vectors of the user's recent history, or None / ``n == 0``.
        history_weight: Weight of the history in ``[0, 1]``; 0 ignores the history, 1 ignores the query.

    Returns:
        ``[dim]`` float32 unit vector, or None when there is nothing to search with.

    Raises:
        ValueError: weight outside ``[0, 1]``, or shapes that do not agree.
    """
    if not 0.0 <= history_weight <= 1.0:
        raise ValueError(f"history_weight must be in [0, 1], got {history_weight}")
    q = None
    if query_embedding is not None:
        q = _normalise(np.asarray(query_embedding, dtype=np.float32).reshape(-1))
    h = None
    if history_vectors is not None and len(history_vectors):
        hv = np.asarray(history_vectors, dtype=np.float32)
        if hv.ndim != 2:
            raise ValueError(f"history_vectors must be [n, dim], got shape {hv.shape}")
        h = _normalise(hv.mean(axis=0))
    if q is not None and h is not None:
        if q.shape != h.shape:
            raise ValueError(f"query dim {q.shape[0]} != history dim {h.shape[0]}")
        blended = _normalise((1.0 - history_weight) * q + history_weight * h)
        return blended if blended is not None else q
    return q if q is not None else h


def write_item_index(
    out_dir: Path,
    item_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    model_version: str,
    model_name: str = TEXT_ENCODER,
    metric: str = COSINE,
    popularity: Sequence[int] | None = None,
    built_at: datetime | None = None,
    index_type: str = ann.AUTO,
    ann_min_items: int = ann.ANN_MIN_ITEMS,
    ann_settings: ann.AnnSettings = ann.AnnSettings(),
) -> ann.AnnInfo:
    """Write ``items.faiss`` and ``items.json`` into ``out_dir`` (the caller makes the folder swap atomic).

    Args:
        out_dir: Existing folder to write into.
        item_ids: Ids in row order of ``vectors``; unique.
        vectors: ``[num_items, dim]`` vectors; with ``metric`` cosine L2-normalised here (inner product is
            then cosine), with dot stored as they are.
        model_version: The model version that produced ``vectors``.
        model_name: The Triton model that produced them (its query vectors are searched against them).
        metric: ``cosine`` or ``dot``.
        popularity: Training interaction count per item, aligned with ``item_ids`` (zeros if None).
        built_at: Build time (now if None).
        index_type: ``flat``, ``hnsw``, or ``auto`` (HNSW from ``ann_min_items`` items on).
        ann_settings: How an HNSW graph is built and its efSearch chosen.

    Returns:
        What was built (type, efSearch, recall@20 against exact search).

    Raises:
        ValueError: ids and vectors disagree, ids repeat, or a vector is zero or not finite.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
        raise ValueError(f"vectors shape {vectors.shape} does not match {len(item_ids)} item ids")
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("item_ids repeat")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms < _MIN_NORM):
        raise ValueError("every vector must be finite and non-zero")
    if metric == DOT:
        norms = np.ones_like(norms)
    popularity = [0] * len(item_ids) if popularity is None else [int(c) for c in popularity]
    if len(popularity) != len(item_ids):
        raise ValueError("popularity must have one count per item")
    kind = ann.resolve_type(index_type, len(item_ids), ann_min_items)
    index, info = ann.build(vectors / norms, np.asarray(popularity), kind, ann_settings)
    faiss.write_index(index, str(Path(out_dir) / INDEX_FILE))
    meta = {
        "format_version": FORMAT_VERSION if info.type == ann.FLAT else ANN_FORMAT_VERSION,
        "item_ids": list(item_ids),
        "model_name": model_name,
        "model_version": model_version,
        "metric": metric,
        "dim": int(vectors.shape[1]),
        "num_items": len(item_ids),
        "popularity": popularity,
        "built_at": (built_at or datetime.now(UTC)).isoformat(),
    }
    if info.type != ann.FLAT:
        meta["index"] = info.to_json()
    (Path(out_dir) / META_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return info


@dataclass(frozen=True)
class _Meta:
    item_ids: tuple[str, ...]
    model_name: str
    model_version: str
    metric: str
    dim: int
    popularity: tuple[int, ...]
    built_at: str
    ann_info: ann.AnnInfo = ann.AnnInfo(ann.FLAT)


class ItemIndex:
    """A loaded item index. Read-only after ``load``, so it can be searched from several threads."""

    def __init__(self, index: faiss.Index, meta: _Meta):
        self._index = index
        self._meta = meta
        self._position = {item_id: i for i, item_id in enumerate(meta.item_ids)}
        # Most popular first; ties keep index order (stable), so the fallback list is deterministic.
        self._by_popularity = sorted(range(len(meta.item_ids)), key=lambda i: -meta.popularity[i])
        self._prior_index: faiss.Index | None = None

    def _with_prior(self) -> faiss.Index:
        """Inner-product index over ``[v_i, log(1 + count_i)]``: a query ``[q, w]`` then scores
        ``q . v_i + w * log(1 + count_i)`` exactly, in one search (built on first use, from the stored vectors)."""
        if self._prior_index is None:
            vectors = self._index.reconstruct_n(0, len(self))  # [N, dim]
            prior = np.log1p(np.asarray(self._meta.popularity, dtype=np.float32)).reshape(-1, 1)  # [N, 1]
            index = faiss.IndexFlatIP(self.dim + 1)
            index.add(np.ascontiguousarray(np.hstack([vectors, prior]), dtype=np.float32))
            self._prior_index = index
        return self._prior_index

    @classmethod
    def load(cls, directory: str | Path) -> ItemIndex:
        """Read an index folder written by ``write_item_index``.

        Raises:
            IndexFormatError: a file is missing or unreadable, or the two files disagree.
        """
        directory = Path(directory)
        meta_path, index_path = directory / META_FILE, directory / INDEX_FILE
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"cannot read {meta_path}: {exc}") from exc
        try:
            if raw.get("format_version") not in READABLE_FORMATS:
                raise IndexFormatError(
                    f"{meta_path}: format_version {raw.get('format_version')!r}, expected one of {READABLE_FORMATS}"
                )
            v1 = raw["format_version"] == 1
            meta = _Meta(
                item_ids=tuple(str(i) for i in raw["item_ids"]),
                model_name=TEXT_ENCODER if v1 else str(raw["model_name"]),
                model_version=str(raw["text_encoder_version"] if v1 else raw["model_version"]),
                metric=COSINE if v1 else str(raw["metric"]),
                dim=int(raw["dim"]),
                popularity=tuple(int(c) for c in raw["popularity"]),
                built_at=str(raw.get("built_at", "")),
                ann_info=ann.AnnInfo.from_json(raw.get("index")),
            )
            num_items = int(raw["num_items"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IndexFormatError(f"{meta_path}: missing or malformed field: {exc!r}") from exc
        if not index_path.is_file():
            raise IndexFormatError(f"{index_path} does not exist")
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise IndexFormatError(f"cannot read {index_path}: {exc}") from exc
        problems = []
        graph = meta.ann_info.type == ann.HNSW
        if index.metric_type != (faiss.METRIC_L2 if graph else faiss.METRIC_INNER_PRODUCT):
            problems.append(f"the FAISS index does not use {'L2 (a graph index)' if graph else 'inner product'}")
        if (meta.ann_info.type == ann.PQ) != isinstance(index, faiss.IndexRefine):
            problems.append(f"the FAISS index is a {type(index).__name__}, the metadata says {meta.ann_info.type}")
        if index.d != meta.dim + meta.ann_info.extra_columns:
            problems.append(f"FAISS dim {index.d} != dim {meta.dim} ({meta.ann_info.type})")
        if not index.ntotal == len(meta.item_ids) == num_items:
            problems.append(f"FAISS has {index.ntotal} vectors, {len(meta.item_ids)} item_ids, num_items {num_items}")
        if len(set(meta.item_ids)) != len(meta.item_ids):
            problems.append("item_ids repeat")
        if len(meta.popularity) != len(meta.item_ids):
            problems.append("popularity is not aligned with item_ids")
        if meta.metric not in METRICS:
            problems.append(f"metric {meta.metric!r} is not one of {METRICS}")
        if problems:
            raise IndexFormatError(f"{directory}: " + "; ".join(problems))
        return cls(index, meta)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._meta.dim

    @property
    def model_name(self) -> str:
        """The Triton model whose vectors the index holds (query vectors must come from it)."""
        return self._meta.model_name

    @property
    def model_version(self) -> str:
        """The model version that produced the item vectors (query vectors must come from it)."""
        return self._meta.model_version

    @property
    def text_encoder_version(self) -> str:
        """The model version that produced the item vectors (the name from when only the text encoder had one)."""
        return self._meta.model_version

    @property
    def metric(self) -> str:
        """``cosine`` (unit vectors) or ``dot`` (raw inner products)."""
        return self._meta.metric

    @property
    def ann_info(self) -> ann.AnnInfo:
        """The FAISS structure (flat: exact; hnsw: a graph, with its efSearch and measured recall@20)."""
        return self._meta.ann_info

    @property
    def item_ids(self) -> tuple[str, ...]:
        """Item ids in index order."""
        return self._meta.item_ids

    @property
    def built_at(self) -> str:
        """When the index was built (ISO 8601)."""
        return self._meta.built_at

    def __len__(self) -> int:
        return len(self._meta.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._position

    def check_compatible(self, *, dim: int | None = None, model_version: str | None = None,
                         text_encoder_version: str | None = None) -> None:
        """Refuse a query vector from another model version than the one the index was built with.

        Vectors from another version live in a different space: results would be wrong without any error,
        so the service checks every answer it searches with.

        Raises:
            IndexFormatError: the dimension or version differs.
        """
        version = model_version if model_version is not None else text_encoder_version
        if dim is not None and dim != self.dim:
            raise IndexFormatError(f"the {self.model_name} vector is {dim}-d, the index holds {self.dim}-d")
        if version is not None and version != self.model_version:
            raise IndexFormatError(
                f"the index was built with {self.model_name} version {self.model_version!r}, "
                f"the vector comes from version {version!r}: rebuild the index"
            )

    def vectors_for(self, item_ids: Sequence[str]) -> np.ndarray:
        """The stored (unit) vectors of ``item_ids``, in the given order.

        Args:
            item_ids: Ids to look up; all must be in the index (filter with ``in`` first).

        Returns:
            ``[len(item_ids), dim]`` float32.

        Raises:
            UnknownItemError: some ids are not in the index.
        """
        missing = [i for i in item_ids if i not in self._position]
        if missing:
            raise UnknownItemError(missing)
        if not item_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = np.fromiter((self._position[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
        vectors = self._index.reconstruct_batch(keys)
        return vectors[:, :self.dim] if self._meta.ann_info.extra_columns else vectors

    def search(
        self, query_vector: np.ndarray, k: int, exclude: Collection[str] = (), popularity_weight: float = 0.0
    ) -> list[tuple[str, float]]:
        """The ``k`` items with the highest inner product with ``query_vector``, skipping ``exclude``.

        With ``popularity_weight`` ``w > 0`` the score is ``q . v_i + w * log(1 + count_i)``, with
        ``count_i`` the item's training interactions: the log-popularity prior that in-batch-negative
        training takes out of the embeddings (it samples negatives in proportion to popularity, so the
        encoder learns ``log p(i | u) - log p(i)``; adding ``tau * log p(i)`` back gives ``p(i | u)``).

        FAISS cannot filter, so the search over-fetches by the number of excluded ids that are in the
        index: that many slots at most can be lost, so exactly ``min(k, items left)`` results come back
        from one search.

        Args:
            query_vector: ``[dim]`` or ``[1, dim]``; normally a unit vector (scores are then cosines).
            k: How many results; 0 or less gives none.
            exclude: Item ids never to return (history, caller exclusions); unknown ids are ignored.
            popularity_weight: Weight of the log-popularity prior (0: cosine only).

        Returns:
            ``(item_id, score)`` pairs, best first.

        Raises:
            ValueError: the query has the wrong dimension or is not finite.
        """
        q = np.asarray(query_vector, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise ValueError(f"query has dim {q.shape[1]}, the index {self.dim}")
        if not np.all(np.isfinite(q)):
            raise ValueError("query vector is not finite")
        if popularity_weight < 0 or not np.isfinite(popularity_weight):
            raise ValueError(f"popularity_weight must be >= 0, got {popularity_weight}")
        if k <= 0 or not len(self):
            return []
        excluded = {i for i in exclude if i in self._position}
        fetch = min(k + len(excluded), len(self))
        index = self._index
        if self._meta.ann_info.type != ann.FLAT:
            scores, positions = ann.search_rows(index, self._meta.ann_info, q, popularity_weight, fetch)
            scores, positions = scores[None, :], positions[None, :]
        else:
            if popularity_weight > 0:
                index = self._with_prior()
                q = np.hstack([q, np.array([[popularity_weight]], dtype=np.float32)])
            scores, positions = index.search(np.ascontiguousarray(q), fetch)
        results: list[tuple[str, float]] = []
        for pos, score in zip(positions[0], scores[0]):
            if pos < 0:
                break
            item_id = self._meta.item_ids[pos]
            if item_id in excluded:
                continue
            results.append((item_id, float(score)))
            if len(results) == k:
                break
        return results

    def score(
        self, query_vector: np.ndarray | None, item_ids: Sequence[str], popularity_weight: float = 0.0
    ) -> list[float]:
        """The search score of each of ``item_ids``, in the given order (exhaustive, exact).

        ``q . v_i + w * log(1 + count_i)`` as :meth:`search` ranks by; with no query vector (a request with
        neither text nor history) the prior term alone. Ids not in the index (added to the catalog after it
        was built) have no vector: they get the mean score of the indexed ones, neither favoured nor
        penalised (0 when none is indexed).

        Raises:
            ValueError: the query has the wrong dimension or is not finite, or the weight is negative.
        """
        if popularity_weight < 0 or not np.isfinite(popularity_weight):
            raise ValueError(f"popularity_weight must be >= 0, got {popularity_weight}")
        q = None
        if query_vector is not None:
            q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
            if q.shape[0] != self.dim:
                raise ValueError(f"query has dim {q.shape[0]}, the index {self.dim}")
            if not np.all(np.isfinite(q)):
                raise ValueError("query vector is not finite")
        indexed = [i for i in item_ids if i in self._position]
        scores: dict[str, float] = {}
        if indexed:
            positions = [self._position[i] for i in indexed]
            values = np.zeros(len(indexed), dtype=np.float64)
            if q is not None:
                values += self.vectors_for(indexed).astype(np.float64) @ q.astype(np.float64)
            if popularity_weight > 0:
                values += popularity_weight * np.log1p(np.asarray([self._meta.popularity[p] for p in positions],
                                                                  dtype=np.float64))
            scores.update(zip(indexed, (float(v) for v in values)))
        neutral = float(np.mean(list(scores.values()))) if scores else 0.0
        return [scores.get(i, neutral) for i in item_ids]

    @property
    def popularity(self) -> tuple[int, ...]:
        """Training interaction count per item, in :attr:`item_ids` order."""
        return self._meta.popularity

    def log_popularity(self, item_ids: Sequence[str]) -> np.ndarray:
        """``log(1 + training interactions)`` of each of ``item_ids`` (0 for ids not in the index)."""
        counts = [self._meta.popularity[self._position[i]] if i in self._position else 0 for i in item_ids]
        return np.log1p(np.asarray(counts, dtype=np.float64))

    def popular(self, k: int, exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` most interacted-with items in training, skipping ``exclude``.

        The fallback for requests with neither history nor query text.

        Returns:
            ``(item_id, training interaction count)`` pairs, most popular first; ties in index order.
        """
        if k <= 0:
            return []
        excluded = set(exclude)
        results: list[tuple[str, float]] = []
        for pos in self._by_popularity:
            item_id = self._meta.item_ids[pos]
            if item_id in excluded:
                continue
            results.append((item_id, float(self._meta.popularity[pos])))
            if len(results) == k:
                break
        return results

    # Part of the index API so callers need one import; the logic is the module-level function.
    user_vector = staticmethod(user_vector)
