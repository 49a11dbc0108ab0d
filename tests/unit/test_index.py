"""ItemIndex (search, exclusion, popularity, user vector, format errors) and the index build without Triton."""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from pathlib import Path

import faiss
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from services.core.catalog import Catalog, DataFormatError, Interaction, Item, item_text, write_interactions
from services.core.index import (
    INDEX_FILE,
    META_FILE,
    IndexFormatError,
    ItemIndex,
    UnknownItemError,
    user_vector,
    write_item_index,
)
from tools import index as index_tool
from tools.index import IndexBuildError, build_index_async, encode_texts

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
    write_item_index(directory, ids, vectors, text_encoder_version=version, popularity=popularity)
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
    write_item_index(tmp_path, ["a", "b"], np.array([[3.0, 4.0], [0.0, 2.0]]), text_encoder_version="1")
    np.testing.assert_allclose(ItemIndex.load(tmp_path).vectors_for(["a", "b"]), [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="non-zero"):
        write_item_index(tmp_path, ["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]), text_encoder_version="1")
    with pytest.raises(ValueError, match="repeat"):
        write_item_index(tmp_path, ["a", "a"], np.eye(2), text_encoder_version="1")
    with pytest.raises(ValueError, match="does not match"):
        write_item_index(tmp_path, ["a"], np.eye(2), text_encoder_version="1")


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


# ---------------------------------------------------------------- build without Triton


class _Response:
    def __init__(self, version: str):
        self.model_version = version


class _Result:
    def __init__(self, vector: np.ndarray, version: str):
        self._vector, self._version = vector, version

    def as_numpy(self, name: str) -> np.ndarray:
        assert name == "embedding"
        return self._vector[None, :]

    def get_response(self) -> _Response:
        return _Response(self._version)


class FakeTriton:
    """Stands in for ``tritonclient.grpc.aio.InferenceServerClient``: embeds text deterministically."""

    instances: list[FakeTriton] = []

    def __init__(self, url: str = "fake:8001", *, ready: bool = True, versions: tuple[str, ...] = ("4",)):
        self.url, self.ready, self.versions = url, ready, versions
        self.in_flight = self.max_in_flight = self.calls = 0
        self.texts: list[str] = []
        self.closed = False
        FakeTriton.instances.append(self)

    @staticmethod
    def embed(text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        return _unit(rng.normal(size=DIM))

    async def is_model_ready(self, model_name: str, model_version: str = "", client_timeout: float | None = None):
        return self.ready

    async def infer(self, model_name, inputs, model_version="", outputs=None, client_timeout=None):
        assert model_name == "text_encoder" and client_timeout is not None
        (text_input,) = inputs
        assert (text_input.name(), text_input.shape(), text_input.datatype()) == ("text", [1, 1], "BYTES")
        text = deserialize_bytes_tensor(text_input._get_content())[0].decode()
        self.calls += 1
        version = self.versions[min(self.calls - 1, len(self.versions) - 1)]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(random.random() / 500)  # completions arrive out of order
            if text == "boom":
                raise InferenceServerException("Stub process is not healthy")
        finally:
            self.in_flight -= 1
        self.texts.append(text)
        return _Result(self.embed(text), version)

    async def close(self) -> None:
        self.closed = True


async def test_encode_texts_keeps_order_and_bounds_concurrency() -> None:
    client = FakeTriton()
    texts = [f"text {i}" for i in range(100)]
    vectors, version = await encode_texts(client, texts, concurrency=8, progress=False)
    assert version == "4" and vectors.shape == (100, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, np.stack([FakeTriton.embed(t) for t in texts]))
    assert client.max_in_flight == 8
    assert sorted(client.texts) == sorted(texts)


async def test_encode_texts_rejects_mixed_versions_and_failures() -> None:
    with pytest.raises(IndexBuildError, match="several versions"):
        await encode_texts(FakeTriton(versions=("1", "2")), ["a", "b", "c"], concurrency=2, progress=False)
    with pytest.raises(IndexBuildError, match="not healthy"):
        await encode_texts(FakeTriton(), ["a", "boom", "c"], concurrency=2, progress=False)


def _dataset(tmp_path: Path) -> tuple[Path, Path, Catalog]:
    catalog = Catalog({str(i): Item(str(i), f"Film {i}", 1990 + i, ("Drama",) if i % 2 else ()) for i in range(12)})
    catalog.save(tmp_path / "items.jsonl")
    rows = [Interaction("u", "3", 1), Interaction("v", "3", 2), Interaction("v", "5", 3)]
    write_interactions(tmp_path / "train.csv", rows)
    return tmp_path / "items.jsonl", tmp_path / "train.csv", catalog


async def test_build_index_writes_a_loadable_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeTriton)
    FakeTriton.instances.clear()
    cat_path, train_path, catalog = _dataset(tmp_path)
    out = tmp_path / "index"
    out.mkdir()
    (out / "stale.txt").write_text("old build")
    await build_index_async(cat_path, train_path, out, "triton:8001", batch_concurrency=4, progress=False)
    (client,) = FakeTriton.instances
    assert client.url == "triton:8001" and client.closed
    assert sorted(p.name for p in out.iterdir()) == [INDEX_FILE, META_FILE]
    idx = ItemIndex.load(out)
    assert idx.item_ids == tuple(catalog.items) and idx.text_encoder_version == "4"
    item = catalog["7"]
    assert idx.search(FakeTriton.embed(item_text(item)), 1)[0][0] == "7"
    assert idx.popular(2) == [("3", 2.0), ("5", 1.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "items.jsonl", "train.csv"]


async def test_build_index_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat_path, train_path, _ = _dataset(tmp_path)
    monkeypatch.setattr(grpcclient, "InferenceServerClient", lambda url: FakeTriton(url, ready=False))
    with pytest.raises(IndexBuildError, match="not ready"):
        await build_index_async(cat_path, train_path, tmp_path / "index", "triton:8001", progress=False)
    assert not (tmp_path / "index").exists()
    write_interactions(train_path, [Interaction("u", "unknown-item", 1)])
    with pytest.raises(DataFormatError, match="not in the catalog"):
        await build_index_async(cat_path, train_path, tmp_path / "index", "triton:8001", progress=False)


def test_build_index_sync_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeTriton)
    cat_path, train_path, _ = _dataset(tmp_path)
    out = index_tool.build_index(cat_path, train_path, tmp_path / "index", "triton:8001", progress=False)
    assert len(ItemIndex.load(out)) == 12
