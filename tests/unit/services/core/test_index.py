"""ItemIndex: search, exclusion, popularity, user vector and format errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import faiss
import numpy as np
import pytest

from services.core.index import (
    INDEX_FILE,
    META_FILE,
    IndexFormatError,
    ItemIndex,
    UnknownItemError,
    user_vector,
    write_item_index,
)

DIM = 8


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def make_index(
    directory: Path, n: int = 30, *, popularity: list[int] | None = None, seed: int = 0, version: str = "3"
) -> tuple[ItemIndex, list[str], np.ndarray]:
    """Write a synthetic index of ``n`` random unit vectors and load it."""
    rng = np.random.default_rng(seed)
    vectors = _unit(rng.normal(size=(n, DIM)))
    ids = [f"item-{i}" for i in range(n)]
    directory.mkdir(parents=True, exist_ok=True)
    write_item_index(directory, ids, vectors, model_version=version, popularity=popularity)
    return ItemIndex.load(directory), ids, vectors


def _brute_force(vectors: np.ndarray, ids: list[str], q: np.ndarray, k: int, exclude: set[str]) -> list[str]:
    order = np.argsort(-(vectors @ q), kind="stable")
    return [ids[i] for i in order if ids[i] not in exclude][:k]


# ---------------------------------------------------------------- load and metadata


def test_load_exposes_metadata(tmp_path: Path) -> None:
    idx, ids, _ = make_index(tmp_path, 5, version="7")
    assert (idx.dim, idx.text_encoder_version, idx.item_ids, len(idx)) == (DIM, "7", tuple(ids), 5)
    assert "item-4" in idx and "item-5" not in idx
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["num_items"] == 5 and meta["built_at"].endswith("+00:00")


def test_vectors_for_returns_stored_unit_vectors_in_request_order(tmp_path: Path) -> None:
    idx, _, vectors = make_index(tmp_path, 10)
    got = idx.vectors_for(["item-3", "item-0", "item-3"])
    np.testing.assert_allclose(got, vectors[[3, 0, 3]], atol=1e-6)
    assert idx.vectors_for([]).shape == (0, DIM)
    with pytest.raises(UnknownItemError, match="nope") as err:
        idx.vectors_for(["item-1", "nope"])
    assert err.value.item_ids == ["nope"]


def test_write_normalises_and_validates(tmp_path: Path) -> None:
    write_item_index(tmp_path, ["a", "b"], np.array([[3.0, 4.0], [0.0, 2.0]]), model_version="1")
    np.testing.assert_allclose(ItemIndex.load(tmp_path).vectors_for(["a", "b"]), [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="non-zero"):
        write_item_index(tmp_path, ["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]), model_version="1")
    with pytest.raises(ValueError, match="repeat"):
        write_item_index(tmp_path, ["a", "a"], np.eye(2), model_version="1")
    with pytest.raises(ValueError, match="does not match"):
        write_item_index(tmp_path, ["a"], np.eye(2), model_version="1")


# ---------------------------------------------------------------- search


@pytest.mark.parametrize("seed", range(5))
def test_search_matches_brute_force_and_returns_exactly_k(tmp_path: Path, seed: int) -> None:
    idx, ids, vectors = make_index(tmp_path, 40, seed=seed)
    rng = random.Random(seed)
    q = _unit(np.random.default_rng(seed + 100).normal(size=DIM))
    # Exclude mostly the nearest items, the worst case for a search that does not over-fetch.
    nearest = _brute_force(vectors, ids, q, 15, set())
    exclude = set(rng.sample(nearest, 10)) | {"not-in-index", "also-unknown"}
    got = idx.search(q, 10, exclude)
    assert [i for i, _ in got] == _brute_force(vectors, ids, q, 10, exclude)
    assert len(got) == 10 and not exclude & {i for i, _ in got}
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, [float(vectors[ids.index(i)] @ q) for i, _ in got], atol=1e-5)


@pytest.mark.parametrize("weight", [0.05, 0.5])
def test_search_with_a_popularity_prior_adds_weighted_log_counts(tmp_path: Path, weight: float) -> None:
    counts = [int(c) for c in np.random.default_rng(1).integers(0, 500, size=40)]
    idx, ids, vectors = make_index(tmp_path, 40, popularity=counts)
    q = _unit(np.random.default_rng(7).normal(size=DIM))
    exclude = {ids[3], ids[17]}
    scores = vectors @ q + weight * np.log1p(np.array(counts, dtype=np.float32))
    order = [ids[i] for i in np.argsort(-scores, kind="stable") if ids[i] not in exclude][:10]
    got = idx.search(q, 10, exclude, popularity_weight=weight)
    assert [i for i, _ in got] == order
    np.testing.assert_allclose([s for _, s in got], [float(scores[ids.index(i)]) for i, _ in got], atol=1e-4)
    assert [i for i, _ in idx.search(q, 10, exclude)] == _brute_force(vectors, ids, q, 10, exclude)  # w=0: cosine
    with pytest.raises(ValueError, match="popularity_weight"):
        idx.search(q, 10, popularity_weight=-1.0)


def test_score_gives_the_search_score_of_given_items_in_their_order(tmp_path: Path) -> None:
    counts = [int(c) for c in np.random.default_rng(2).integers(0, 500, size=30)]
    idx, ids, vectors = make_index(tmp_path, 30, popularity=counts)
    q = _unit(np.random.default_rng(8).normal(size=DIM))
    top = dict(idx.search(q, 30, popularity_weight=0.05))
    wanted = [ids[7], ids[0], ids[21]]
    np.testing.assert_allclose(idx.score(q, wanted, 0.05), [top[i] for i in wanted], atol=1e-5)
    # No query vector: the prior alone. Ids not in the index: the mean of the indexed ones (0 if none).
    prior = [0.5 * np.log1p(counts[n]) for n in (1, 2)]
    assert idx.score(None, [ids[1], "added-later", ids[2]], 0.5) == pytest.approx([prior[0], np.mean(prior), prior[1]])
    assert idx.score(None, ["added-later"], 0.5) == [0.0]
    assert idx.score(None, [ids[1]], 0.0) == [0.0]
    with pytest.raises(ValueError, match="dim"):
        idx.score(np.ones(DIM + 1), wanted)
    with pytest.raises(ValueError, match="popularity_weight"):
        idx.score(q, wanted, -0.1)


def test_search_with_k_beyond_what_remains(tmp_path: Path) -> None:
    idx, ids, _ = make_index(tmp_path, 6)
    q = np.ones(DIM, np.float32)
    assert len(idx.search(q, 100)) == 6
    got = idx.search(q, 100, exclude={"item-0", "item-5"})
    assert sorted(i for i, _ in got) == ids[1:5]
    assert idx.search(q, 5, exclude=set(ids)) == []
    assert idx.search(q, 0) == [] and idx.search(q, -1) == []


def test_search_accepts_batch_shaped_query_and_rejects_bad_ones(tmp_path: Path) -> None:
    idx, ids, vectors = make_index(tmp_path, 10)
    assert idx.search(vectors[4][None, :], 1)[0][0] == ids[4]
    with pytest.raises(ValueError, match="dim"):
        idx.search(np.ones(DIM + 1), 3)
    with pytest.raises(ValueError, match="finite"):
        idx.search(np.full(DIM, np.nan), 3)


# ---------------------------------------------------------------- popularity


def test_popular_orders_by_count_then_index_order_and_excludes(tmp_path: Path) -> None:
    idx, _, _ = make_index(tmp_path, 6, popularity=[5, 9, 0, 9, 1, 5])
    assert idx.popular(4) == [("item-1", 9.0), ("item-3", 9.0), ("item-0", 5.0), ("item-5", 5.0)]
    assert [i for i, _ in idx.popular(3, exclude={"item-1", "item-0", "x"})] == ["item-3", "item-5", "item-4"]
    assert len(idx.popular(50)) == 6
    assert idx.popular(0) == []


# ---------------------------------------------------------------- user vector


def test_user_vector_blends_normalised_sides() -> None:
    q = np.array([2.0, 0.0, 0.0])
    history = np.array([[0.0, 1.0, 0.0], [0.0, 0.6, 0.8]])
    h = _unit(history.mean(axis=0))
    np.testing.assert_allclose(user_vector(q, None, 0.5), [1, 0, 0])
    np.testing.assert_allclose(user_vector(None, history, 0.5), h, atol=1e-6)
    np.testing.assert_allclose(user_vector(q, history, 0.0), [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(user_vector(q, history, 1.0), h, atol=1e-6)
    mixed = user_vector(q, history, 0.25)
    np.testing.assert_allclose(mixed, _unit(0.75 * np.array([1.0, 0, 0]) + 0.25 * h), atol=1e-6)
    assert mixed.dtype == np.float32 and abs(np.linalg.norm(mixed) - 1) < 1e-6
    # The history weight does not depend on how many items the history has.
    np.testing.assert_allclose(user_vector(q, np.repeat(history, 50, axis=0), 0.25), mixed, atol=1e-6)


def test_user_vector_edge_cases() -> None:
    q = np.array([[1.0, 0.0]])
    assert user_vector(None, None, 0.5) is None
    assert user_vector(None, np.zeros((0, 2)), 0.5) is None
    np.testing.assert_allclose(user_vector(q, np.zeros((0, 2)), 0.5), [1, 0])
    # Opposite sides cancel out: the request's own text wins.
    np.testing.assert_allclose(user_vector(q, np.array([[-1.0, 0.0]]), 0.5), [1, 0])
    assert ItemIndex.user_vector is user_vector
    with pytest.raises(ValueError, match="history_weight"):
        user_vector(q, None, 1.5)
    with pytest.raises(ValueError, match="dim"):
        user_vector(q, np.ones((2, 3)), 0.5)


# ---------------------------------------------------------------- format errors


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="cannot read"):
        ItemIndex.load(tmp_path / "missing")
    make_index(tmp_path / "ok", 4)

    def broken(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in (INDEX_FILE, META_FILE):
            (d / f).write_bytes((tmp_path / "ok" / f).read_bytes())
        return d

    d = broken("no-faiss")
    (d / INDEX_FILE).unlink()
    with pytest.raises(IndexFormatError, match="does not exist"):
        ItemIndex.load(d)

    d = broken("corrupt-faiss")
    (d / INDEX_FILE).write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="cannot read"):
        ItemIndex.load(d)

    for name, change, message in [
        ("fewer-ids", lambda m: m.update(item_ids=m["item_ids"][:3], num_items=3), "4 vectors, 3 item_ids"),
        ("dim", lambda m: m.update(dim=16), "dim"),
        ("version", lambda m: m.update(format_version=99), "format_version"),
        ("no-ids", lambda m: m.pop("item_ids"), "item_ids"),
        ("popularity", lambda m: m.update(popularity=[1]), "popularity"),
        ("repeat", lambda m: m.update(item_ids=["a", "a", "b", "c"]), "repeat"),
    ]:
        d = broken(name)
        meta = json.loads((d / META_FILE).read_text())
        change(meta)
        (d / META_FILE).write_text(json.dumps(meta))
        with pytest.raises(IndexFormatError, match=message):
            ItemIndex.load(d)

    d = broken("l2")
    l2 = faiss.IndexFlatL2(DIM)
    l2.add(np.eye(4, DIM, dtype=np.float32))
    faiss.write_index(l2, str(d / INDEX_FILE))
    with pytest.raises(IndexFormatError, match="inner product"):
        ItemIndex.load(d)


def test_check_compatible(tmp_path: Path) -> None:
    idx, _, _ = make_index(tmp_path, 3, version="2")
    idx.check_compatible(dim=DIM, text_encoder_version="2")
    with pytest.raises(IndexFormatError, match="rebuild"):
        idx.check_compatible(text_encoder_version="3")
    with pytest.raises(IndexFormatError, match="8-d"):
        idx.check_compatible(dim=384)


def test_a_dot_index_keeps_raw_vectors_and_names_its_model(tmp_path: Path) -> None:
    vectors = np.array([[3.0, 0.0], [0.0, 0.5]])
    write_item_index(tmp_path, ["a", "b"], vectors, model_version="4", model_name="sequence_encoder", metric="dot",
                     popularity=[3, 0])
    idx = ItemIndex.load(tmp_path)
    assert (idx.model_name, idx.model_version, idx.metric) == ("sequence_encoder", "4", "dot")
    assert idx.search(np.array([1.0, 1.0]), 2) == [("a", pytest.approx(3.0)), ("b", pytest.approx(0.5))]
    assert idx.log_popularity(["a", "b", "new"]).tolist() == pytest.approx([np.log(4.0), 0.0, 0.0])
    with pytest.raises(IndexFormatError, match="version '4'"):
        idx.check_compatible(model_version="5")


def test_format_1_indexes_are_still_read_as_text_encoder_indexes(tmp_path: Path) -> None:
    write_item_index(tmp_path, ["a", "b"], np.eye(2), model_version="3")
    meta = json.loads((tmp_path / "items.json").read_text())
    meta = {**{k: v for k, v in meta.items() if k not in ("model_name", "model_version", "metric")},
            "format_version": 1, "text_encoder_version": "3"}
    (tmp_path / "items.json").write_text(json.dumps(meta))
    idx = ItemIndex.load(tmp_path)
    assert (idx.model_name, idx.model_version, idx.metric) == ("text_encoder", "3", "cosine")
