"""The index build (tools/index.py) against a fake Triton: encoding order, concurrency, failures, output."""

from __future__ import annotations

import asyncio
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from services.core.catalog import Catalog, DataFormatError, Interaction, Item, item_text, write_interactions
from services.core.index import INDEX_FILE, META_FILE, ItemIndex
from services.core.intent import INTENT_FILE, IntentModel
from tools import index as index_tool
from tools.index import IndexBuildError, build_index_async, encode_texts

DIM = 8


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


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
    monkeypatch.setattr(index_tool, "triton_client", lambda settings: FakeTriton(settings.grpc_addr))
    FakeTriton.instances.clear()
    cat_path, train_path, catalog = _dataset(tmp_path)
    out = tmp_path / "index"
    out.mkdir()
    (out / "stale.txt").write_text("old build")
    await build_index_async(cat_path, train_path, out, "triton:8001", batch_concurrency=4, progress=False)
    (client,) = FakeTriton.instances
    assert client.url == "triton:8001" and client.closed
    assert sorted(p.name for p in out.iterdir()) == [INTENT_FILE, INDEX_FILE, META_FILE]
    intent = IntentModel.load(out)  # the heads, fitted on the same encoder version's embeddings
    assert intent.encoder_version == "4" and [h.attribute for h in intent.heads] == ["year"]  # one genre: no head
    idx = ItemIndex.load(out)
    assert idx.item_ids == tuple(catalog.items) and idx.text_encoder_version == "4"
    item = catalog["7"]
    assert idx.search(FakeTriton.embed(item_text(item)), 1)[0][0] == "7"
    assert idx.popular(2) == [("3", 2.0), ("5", 1.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "items.jsonl", "train.csv"]


async def test_build_index_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat_path, train_path, _ = _dataset(tmp_path)
    monkeypatch.setattr(index_tool, "triton_client", lambda settings: FakeTriton(settings.grpc_addr, ready=False))
    with pytest.raises(IndexBuildError, match="not ready"):
        await build_index_async(cat_path, train_path, tmp_path / "index", "triton:8001", progress=False)
    assert not (tmp_path / "index").exists()
    write_interactions(train_path, [Interaction("u", "unknown-item", 1)])
    with pytest.raises(DataFormatError, match="not in the catalog"):
        await build_index_async(cat_path, train_path, tmp_path / "index", "triton:8001", progress=False)


def test_build_index_sync_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_tool, "triton_client", lambda settings: FakeTriton(settings.grpc_addr))
    cat_path, train_path, _ = _dataset(tmp_path)
    out = index_tool.build_index(cat_path, train_path, tmp_path / "index", "triton:8001", progress=False)
    assert len(ItemIndex.load(out)) == 12


def test_reindex_rebuilds_the_structure_from_the_stored_vectors_and_keeps_the_other_files(tmp_path: Path) -> None:
    from services.core.index import write_item_index

    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(300)]
    vectors = _unit(rng.normal(size=(300, DIM)))
    out = tmp_path / "index"
    out.mkdir()
    write_item_index(out, ids, vectors, model_version="7", popularity=list(range(300)), index_type="flat")
    (out / INTENT_FILE).write_text("{}")
    index_tool.reindex(out, "hnsw")
    rebuilt = ItemIndex.load(out)
    assert rebuilt.ann_info.type == "hnsw" and rebuilt.ann_info.recall_at_20 >= 0.95
    assert rebuilt.item_ids == tuple(ids) and rebuilt.model_version == "7" and rebuilt.popularity == tuple(range(300))
    np.testing.assert_allclose(rebuilt.vectors_for(ids), vectors, atol=1e-5)
    assert (out / INTENT_FILE).read_text() == "{}"
